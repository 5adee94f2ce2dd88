// A cluster for the agent tests: nodes as namespaces on one underlay switch,
// `twill agent` running in each, pods attached with twill's own CNI plugins
// (the flannel plugin reading the node's subnet.env), as on a real node.
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { AgentProcess, agentTemp } from '../support/agent.js';
import { runPlugin, twillPluginDir } from '../support/cni.js';
import { bridgeJson, ipJson } from '../support/exec.js';

export interface ClusterNode {
  name: string;
  host: TestHost;
  ip: string | null;
  ip6: string | null;
  subnetFile: string;
  dataDir: string;
  agent: AgentProcess | null;
}

export interface Pod {
  host: TestHost;
  ip: string | null;
  ip6: string | null;
  /** The container ID it was added with (DEL needs it). */
  id: string;
}

export class TestCluster {
  readonly hosts = new TestHosts();
  readonly tmp = agentTemp();
  readonly nodes: ClusterNode[] = [];
  readonly plugins = twillPluginDir();
  private pods = 0;

  /** Hosts on the underlay that are not nodes (etcd members, an outside host), by name. */
  readonly extra: Record<string, TestHost> = {};

  /** extra: more hosts on the underlay, at 198.18.0.101, .102, ... in order. */
  constructor(readonly opts: { nodes: number; ipv4?: boolean; ipv6?: boolean; extra?: string[] }) {}

  async build(): Promise<void> {
    const v4 = this.opts.ipv4 ?? true;
    const v6 = this.opts.ipv6 ?? false;
    const names = Array.from({ length: this.opts.nodes }, (_, i) => `n${i + 1}`);
    const addrs = Object.fromEntries(names.map((n, i) => [n, `198.18.0.${i + 1}/24`]));
    for (const [i, name] of (this.opts.extra ?? []).entries()) addrs[name] = `198.18.0.${101 + i}/24`;
    const { hosts } = await this.hosts.underlay(addrs);
    for (const name of this.opts.extra ?? []) this.extra[name] = hosts[name]!;
    for (const [i, name] of names.entries()) {
      const host = hosts[name]!;
      if (v6) await host.handle.addAddr('eth0', `fd18::${i + 1}/64`, { noDad: true });
      // A default route, as a node has: the agent picks its interface from it.
      if (v4) await host.handle.addRoute({ dst: 'default', gateway: '198.18.0.254' });
      if (v6) await host.handle.addRoute({ dst: 'default6', gateway: 'fd18::fe' });
      const dataDir = join(this.tmp.dir, name, 'data');
      mkdirSync(dataDir, { recursive: true });
      this.nodes.push({ name, host, ip: v4 ? `198.18.0.${i + 1}` : null, ip6: v6 ? `fd18::${i + 1}` : null, subnetFile: join(this.tmp.dir, name, 'subnet.env'), dataDir, agent: null });
    }
  }

  node(name: string): ClusterNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** Starts the agent on a node with the given store flags (and test-friendly periods). */
  start(node: ClusterNode, storeArgs: string[], extra: string[] = [], opts: { sameMountNamespace?: boolean } = {}): AgentProcess {
    node.agent = new AgentProcess(node.host, [
      ...storeArgs, '--subnet-file', node.subnetFile, '--data-dir', node.dataDir, '--iptables-resync', '1', '--log-level', 'debug', '--node-name', node.name, ...extra,
    ], {}, opts);
    return node.agent;
  }

  subnetEnv(node: ClusterNode): Record<string, string> {
    return Object.fromEntries(
      readFileSync(node.subnetFile, 'utf8').trim().split('\n').map((l) => l.split('=') as [string, string]),
    );
  }

  /** kube-flannel's first plugin (its cniVersion 0.3.1, which flannel's own plugin also speaks), with this test's paths for the node. */
  podConf(node: ClusterNode): Record<string, unknown> {
    return {
      cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true },
      subnetFile: node.subnetFile, dataDir: join(this.tmp.dir, node.name, 'flannel'), ipam: { dataDir: join(this.tmp.dir, node.name, 'ipam') },
    };
  }

  /**
   * A pod on the node, through the flannel CNI plugin (kube-flannel's config) as the runtime
   * would add it: twill's plugins, or with `pluginDir` another set (the reference plugins).
   */
  async addPod(node: ClusterNode, pluginDir = this.plugins.dir): Promise<Pod> {
    const id = `p${++this.pods}`;
    const host = await this.hosts.host(`${node.name}${id}`);
    const r = await runPlugin(node.host.name, join(pluginDir, 'flannel'), {
      command: 'ADD', containerId: id, netns: `/run/netns/${host.name}`, ifname: 'eth0', path: pluginDir,
    }, this.podConf(node));
    if (r.code !== 0) throw new Error(`pod ADD on ${node.name} failed: ${r.stdout}${r.stderr}`);
    const ips = (r.json as { ips: { address: string }[] }).ips.map((i) => i.address.split('/')[0]!);
    return { host, id, ip: ips.find((i) => i.includes('.')) ?? null, ip6: ips.find((i) => i.includes(':')) ?? null };
  }

  /** DEL of a pod through twill's flannel plugin; the IPs it held are free afterwards. */
  async deletePod(node: ClusterNode, pod: Pod): Promise<void> {
    const r = await runPlugin(node.host.name, join(this.plugins.dir, 'flannel'), {
      command: 'DEL', containerId: pod.id, netns: `/run/netns/${pod.host.name}`, ifname: 'eth0', path: this.plugins.dir,
    }, this.podConf(node));
    if (r.code !== 0) throw new Error(`pod DEL on ${node.name} failed: ${r.stdout}${r.stderr}`);
  }

  /** The IPs host-local has allocated on a node (its files named by address). */
  allocatedIps(node: ClusterNode): string[] {
    const dir = join(this.tmp.dir, node.name, 'ipam', 'cbr0');
    return existsSync(dir) ? readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/.test(f) && f.includes('.')).sort() : [];
  }

  /** The kernel's view of what a node programmed for a peer's subnet. */
  async routesVia(node: ClusterNode, dev: string): Promise<string[]> {
    return (await ipJson<{ dst: string; dev: string }[]>(node.host.name, ['route', 'show', 'proto', '87'])).filter((r) => r.dev === dev).map((r) => r.dst).sort();
  }

  async fdb(node: ClusterNode, dev = 'flannel.1'): Promise<{ mac: string; dst: string }[]> {
    return (await bridgeJson<{ mac: string; dst?: string }[]>(node.host.name, ['fdb', 'show', 'dev', dev])).filter((f): f is { mac: string; dst: string } => typeof f.dst === 'string');
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.agent?.kill()));
    this.plugins.remove();
    await this.hosts.cleanup();
    this.tmp.cleanup();
  }
}

/** Polls until fn passes (returns without throwing) or the time is up; then throws fn's last error. */
export async function eventually<T>(fn: () => Promise<T>, timeoutMs = 5000, stepMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, stepMs));
    }
  }
}
