// Run while the SEA's startup snapshot is taken: the plugins' pure code
// (env, config, results, IP math) runs once, so what V8 compiled for it can go
// into the snapshot instead of being compiled at every plugin start. No kernel,
// no files, no environment: nothing of this run may leak into a real one.
import { invoke } from './runner.js';
import { formatResult, parseResult } from './result.js';
import { readCmdArgs } from './env.js';
import { SUPPORTED_VERSIONS } from './version.js';
import type { Plugin } from './plugin.js';

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
}
