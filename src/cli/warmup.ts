// Run while the SEA's startup snapshot is taken: the plugins' pure code
// (env, config, results, IP math) runs once, so what V8 compiled for it can go
// into the snapshot instead of being compiled at every plugin start. No kernel,
// no files, no environment: nothing of this run may leak into a real one.
import { invoke } from '../cni/runner.js';
import { formatResult, parseResult } from '../cni/result.js';
import { readCmdArgs } from '../cni/env.js';
import { SUPPORTED_VERSIONS } from '../cni/version.js';
import type { Plugin } from '../cni/plugin.js';

const sampleResult = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'cni0', mac: '0a:00:00:00:00:01' }, { name: 'veth0a1b2c3d', mac: '0a:00:00:00:00:02' }, { name: 'eth0', mac: '0a:00:00:00:00:03', sandbox: '/run/netns/x' }],
  ips: [{ interface: 2, address: '10.244.1.2/24', gateway: '10.244.1.1' }, { interface: 2, address: 'fd00::2/64', gateway: 'fd00::1' }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }, { dst: '10.244.0.0/16' }],
};

export async function warmUp(plugins: Plugin[]): Promise<void> {
  for (const plugin of plugins) await invoke(plugin, { CNI_COMMAND: 'VERSION' }, Buffer.alloc(0));
  const stdin = Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'warm', type: 'bridge', ipam: { type: 'host-local', subnet: '10.244.1.0/24' } }));
  readCmdArgs('ADD', { CNI_CONTAINERID: 'warm', CNI_NETNS: '/run/netns/warm', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=warm' }, stdin);
  for (const v of SUPPORTED_VERSIONS) parseResult(formatResult(parseResult(sampleResult), v));
  const { loadHostLocalConfig } = await import('../ipam/config.js');
  const { loadBridgeConfig } = await import('../plugins/bridge/config.js');
  const conf = JSON.parse(stdin.toString()) as Parameters<typeof loadBridgeConfig>[0];
  loadBridgeConfig(conf, new Map());
  loadHostLocalConfig(conf, new Map([['IgnoreUnknown', '1']]));

  // kube-flannel's conflist: flannel's delegate, then portmap with one hostPort.
  const { warmUpFlannel } = await import('../plugins/flannel/index.js');
  const delegate = JSON.parse(warmUpFlannel({ cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } }, SUBNET_ENV).toString()) as Parameters<typeof loadBridgeConfig>[0];
  loadBridgeConfig(delegate, new Map());
  loadHostLocalConfig(delegate, new Map());
  const { loadPortmapConfig } = await import('../plugins/portmap/config.js');
  const pm = loadPortmapConfig({ cniVersion: '0.3.1', name: 'cbr0', type: 'portmap', capabilities: { portMappings: true }, runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] } });
  const portmap = { network: 'cbr0', containerId: 'warm', address: '10.244.1.2/24', mappings: pm.mappings, snat: pm.snat, markMasqBit: pm.markMasqBit, externalSetMarkChain: pm.externalSetMarkChain, conditions: pm.conditionsV4, masqAll: pm.masqAll };
  // Evaluated here, the firewall layer's modules are part of the snapshot, not of portmap's ADD.
  await import('../firewall/index.js');
  const { IptablesPortmap } = await import('../firewall/portmap_iptables.js');
  await IptablesPortmap.warmUp(portmap, NAT_SAVE);
  const { NftablesPortmap } = await import('../firewall/portmap_nftables.js');
  const hook = (name: string, h: 'prerouting' | 'output' | 'postrouting', priority: number) => ({ name, type: 'nat', hook: h, priority });
  const plain = (name: string) => ({ name, type: null, hook: null, priority: null });
  const rule = (chain: string, handle: number, jump: string, exprs: string[]) => ({ chain, handle, comment: null, jumps: [jump], exprs });
  NftablesPortmap.warmUp(portmap, {
    chains: [plain('hostports'), plain('hostip_hostports'), plain('hostports_all'), hook('prerouting', 'prerouting', -100), hook('output', 'output', -100), hook('masquerading', 'postrouting', 100)],
    rules: [
      rule('hostports_all', 1, 'hostip_hostports', ['immediate']),
      rule('hostports_all', 2, 'hostports', ['immediate']),
      rule('prerouting', 3, 'hostports_all', ['fib', 'cmp', 'immediate']),
      rule('output', 4, 'hostports_all', ['fib', 'cmp', 'immediate']),
    ],
  });
  const { warmUpKernelCodecs } = await import('../kernel/warmup.js');
  warmUpKernelCodecs();
  // The warm path's client: the request it sends and the answer it reads.
  const { forwardRequest, parseAnswer } = await import('../cni/forward.js');
  const view = { mountNs: '0:1', netNs: '0:2', cwd: '/', twill: '0.0.0', executables: ['0:3'] };
  JSON.stringify(forwardRequest('flannel', { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'warm', CNI_PATH: '/opt/cni/bin' }, stdin, view));
  parseAnswer(`${JSON.stringify({ served: true, code: 0, stdout: JSON.stringify(sampleResult), ms: 1 })}\n`);
}

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

/** iptables-nft-save of a node with one mapped port (the shape portmap reads before each ADD). */
const NAT_SAVE = [
  '*nat',
  ':PREROUTING ACCEPT [0:0]',
  ':INPUT ACCEPT [0:0]',
  ':OUTPUT ACCEPT [0:0]',
  ':POSTROUTING ACCEPT [0:0]',
  ':CNI-DN-0123456789abcdef01234 - [0:0]',
  ':CNI-HOSTPORT-DNAT - [0:0]',
  ':CNI-HOSTPORT-MASQ - [0:0]',
  ':CNI-HOSTPORT-SETMARK - [0:0]',
  '-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT',
  '-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT',
  '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
  '-A CNI-DN-0123456789abcdef01234 -s 10.244.1.0/24 -p tcp -m tcp --dport 8081 -j CNI-HOSTPORT-SETMARK',
  '-A CNI-DN-0123456789abcdef01234 -s 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j CNI-HOSTPORT-SETMARK',
  '-A CNI-DN-0123456789abcdef01234 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.244.1.3:80',
  '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"cbr0\\" id: \\"other\\"" -m multiport --dports 8081 -j CNI-DN-0123456789abcdef01234',
  '-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE',
  '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000',
  'COMMIT',
  '',
].join('\n');
