// The lab as a container runtime: kube-flannel's conflist run plugin by plugin
// (each its own process, inside the node's namespace), as containerd runs it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execIn } from './exec.js';
import { nodeView } from './nodeview.js';
import { LabError } from './layout.js';
import type { LabState, NodeState, PodState, PortMapping } from './state.js';

/** kube-flannel.yml's /etc/cni/net.d/10-flannel.conflist, unchanged. */
export const KUBE_FLANNEL_CONFLIST = {
  name: 'cbr0',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
} as const;

interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

interface Conflist {
  name: string;
  cniVersion: string;
  plugins: PluginConf[];
}

/**
 * The node's conflist: kube-flannel's as it is. Its plugins run in the node's
 * view (nodeview.ts), where /run/flannel and /var/lib/cni are the node's own.
 */
export function nodeConflist(): Conflist {
  const [flannel, portmap] = KUBE_FLANNEL_CONFLIST.plugins;
  return {
    name: KUBE_FLANNEL_CONFLIST.name,
    cniVersion: KUBE_FLANNEL_CONFLIST.cniVersion,
    plugins: [
      { ...flannel, delegate: { ...flannel.delegate } },
      { ...portmap, capabilities: { ...portmap.capabilities } },
    ],
  };
}

export function writeNodeConflist(node: NodeState): string {
  const path = join(node.dir, 'etc/cni/net.d/10-flannel.conflist');
  writeFileSync(path, `${JSON.stringify(nodeConflist(), null, 2)}\n`);
  return path;
}

function pluginStdin(list: Conflist, plugin: PluginConf, pod: PodState, prevResult: Record<string, unknown> | null): string {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  // A runtime passes a capability's runtimeConfig only to plugins that declare it.
  if (plugin.capabilities?.portMappings && pod.portMappings.length > 0) conf.runtimeConfig = { portMappings: pod.portMappings.map((m) => ({ ...m })) };
  if (prevResult) conf.prevResult = prevResult;
  return JSON.stringify(conf);
}

async function runPlugin(state: LabState, node: NodeState, pod: PodState, command: 'ADD' | 'DEL', plugin: PluginConf, stdin: string): Promise<Record<string, unknown> | null> {
  const env = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: `/run/netns/${pod.netns}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: state.pluginDir,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId}`,
    // A lab node is not this machine: its plugins never hand calls to a server the machine may run.
    TWILL_CNI_SOCKET: 'off',
  };
  const [sh, ...view] = nodeView(node.dir);
  const r = await execIn(node.netns, sh!, [...view, join(state.pluginDir, plugin.type)], { env, input: stdin, timeoutMs: 60_000 });
  if (r.code !== 0) {
    throw new LabError(`CNI ${command} of pod ${pod.name} on node ${node.name}: plugin ${plugin.type} failed (exit ${r.code}): ${(r.stdout || r.stderr).trim()}`);
  }
  return r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : null;
}

/** ADD through the whole chain; the last plugin's result is the pod's (cached for DEL, as a runtime does). */
export async function addPodNetwork(state: LabState, node: NodeState, pod: PodState): Promise<Record<string, unknown>> {
  const list = nodeConflist();
  let prev: Record<string, unknown> | null = null;
  for (const plugin of list.plugins) {
    prev = await runPlugin(state, node, pod, 'ADD', plugin, pluginStdin(list, plugin, pod, prev));
  }
  if (!prev) throw new LabError(`CNI ADD of pod ${pod.name}: the chain returned no result`);
  return prev;
}

/** DEL through the chain in reverse, with the cached result as prevResult; DEL succeeds when things are already gone. */
export async function deletePodNetwork(state: LabState, node: NodeState, pod: PodState): Promise<void> {
  const list = nodeConflist();
  for (const plugin of [...list.plugins].reverse()) {
    await runPlugin(state, node, pod, 'DEL', plugin, pluginStdin(list, plugin, pod, pod.result));
  }
}

/** The pod's IPv4 address from a CNI result (any version from 0.3.0 on). */
export function resultIpv4(result: Record<string, unknown>): string | null {
  const ips = (result.ips ?? []) as { address?: string }[];
  const v4 = ips.map((i) => i.address ?? '').find((a) => a.includes('.'));
  return v4 ? v4.split('/')[0]! : null;
}

export function portMappingsFor(podName: string, hostPort: { pod: string; hostPort: number; containerPort: number }): PortMapping[] {
  return podName === hostPort.pod ? [{ hostPort: hostPort.hostPort, containerPort: hostPort.containerPort, protocol: 'tcp' }] : [];
}
