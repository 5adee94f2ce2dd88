// The node of the daily question, built in test namespaces: cni0 with pod veths
// (each pod its own namespace, eth0 with an address of 10.244.1.0/24), an idle
// docker0, flannel.1 with one remote node, subnet.env and host-local's files in a
// temp directory. Used by the explain tests and its benchmark.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TestHosts, HOST_SYSCTLS, type TestHost } from '../support/hosts.js';

export const CLUSTER = '10.244.0.0/16';
export const NODE_SUBNET = '10.244.1.1/24';
export const FLANNEL_MTU = 1450;
export const NETWORK = 'cbr0';
export const REMOTE = { vtep: '10.244.2.0', mac: '0a:58:0a:f4:02:00', publicIp: '198.18.0.2', subnet: '10.244.2.0/24' };

export interface Pod {
  host: TestHost;
  /** The node's end, `veth` + 8 hex characters, as the bridge plugin names it. */
  veth: string;
  ip: string;
  containerId: string;
}

export interface ExplainNode {
  hosts: TestHosts;
  node: TestHost;
  pods: Pod[];
  dir: string;
  subnetFile: string;
  dataDir: string;
  cleanup(): Promise<void>;
}

export const subnetEnvText = `FLANNEL_NETWORK=${CLUSTER}\nFLANNEL_SUBNET=${NODE_SUBNET}\nFLANNEL_MTU=${FLANNEL_MTU}\nFLANNEL_IPMASQ=true\n`;

/** The pod's address: 10.244.1.(i+2) (.1 is the gateway on cni0). */
export const podIp = (i: number): string => {
  const n = i + 2;
  return `10.244.${1 + Math.floor(n / 256)}.${n % 256}`;
};

export async function buildExplainNode(podCount: number, opts: { podPrefixLen?: number } = {}): Promise<ExplainNode> {
  const hosts = new TestHosts();
  const dir = mkdtempSync(join(tmpdir(), 'twill-explain-'));
  try {
    // The node's sysctls are set here, not inherited: ip_forward on, br_netfilter's hook on.
    const { hosts: underlay } = await hosts.underlay({ node: '198.18.0.1/24' });
    const node = underlay.node!;
    node.handle.writeSysctl('net.bridge.bridge-nf-call-iptables', '1');
    for (const [k, v] of Object.entries(HOST_SYSCTLS)) node.handle.writeSysctl(k, v);
    await node.handle.addLink({ kind: 'bridge', name: 'cni0', up: true, mtu: FLANNEL_MTU });
    await node.handle.addAddr('cni0', NODE_SUBNET);
    await node.handle.addLink({ kind: 'bridge', name: 'docker0', up: true });
    await node.handle.addAddr('docker0', '172.17.0.1/16');
    await node.handle.addLink({ kind: 'vxlan', name: 'flannel.1', vni: 1, local: '198.18.0.1', device: 'eth0', learning: false, mtu: FLANNEL_MTU, up: true });
    await node.handle.addAddr('flannel.1', '10.244.1.0/32');
    // One remote node, as the VXLAN backend writes it: neighbour, FDB entry, then the route.
    await node.handle.addNeigh('flannel.1', REMOTE.vtep, REMOTE.mac);
    await node.handle.appendFdb('flannel.1', REMOTE.mac, REMOTE.publicIp);
    await node.handle.addRoute({ dst: REMOTE.subnet, gateway: REMOTE.vtep, device: 'flannel.1', onlink: true });

    const dataDir = join(dir, 'networks');
    mkdirSync(join(dataDir, NETWORK), { recursive: true });
    writeFileSync(join(dataDir, NETWORK, 'lock'), '');
    const pods: Pod[] = [];
    for (let i = 0; i < podCount; i++) {
      const host = await hosts.host(`pod${i}`);
      const veth = `veth${randomBytes(4).toString('hex')}`;
      const ip = podIp(i);
      const containerId = randomBytes(32).toString('hex');
      await node.handle.addLink({ kind: 'veth', name: veth, mtu: FLANNEL_MTU, master: 'cni0', up: true, peer: { name: 'eth0', netns: host.netns, mtu: FLANNEL_MTU } });
      await host.handle.setLinkUp('eth0');
      await host.handle.addAddr('eth0', `${ip}/${opts.podPrefixLen ?? 24}`);
      writeFileSync(join(dataDir, NETWORK, ip), `${containerId}\r\neth0`);
      pods.push({ host, veth, ip, containerId });
    }
    if (pods.length) writeFileSync(join(dataDir, NETWORK, 'last_reserved_ip.0'), pods[pods.length - 1]!.ip);
    const subnetFile = join(dir, 'subnet.env');
    writeFileSync(subnetFile, subnetEnvText);
    return {
      hosts,
      node,
      pods,
      dir,
      subnetFile,
      dataDir,
      async cleanup() {
        rmSync(dir, { recursive: true, force: true });
        await hosts.cleanup();
      },
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    await hosts.cleanup();
    throw e;
  }
}
