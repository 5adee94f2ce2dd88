// twill's masquerade against the reference bridge plugin (containernetworking/plugins
// v1.10.0, built by `npm run peers`): same names, same rules, and each side removes
// what the other set up.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { masqChainName, masqComment, openFirewall, type ContainerMasq } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { natLines, nftMasqLines, nftMasqTable, nftRulesetJson } from './oracle.js';

const PEER_DIR = process.env.TWILL_PEER_CNI_DIR ?? join(process.env.TWILL_PEERS_DIR ?? '/var/cache/twill-peers', 'cni');
const BUILTIN_NAT = [':PREROUTING ACCEPT', ':INPUT ACCEPT', ':OUTPUT ACCEPT', ':POSTROUTING ACCEPT'];

function requirePeers(): void {
  for (const p of ['bridge', 'host-local']) {
    if (!existsSync(join(PEER_DIR, p))) {
      assert.fail(`the reference CNI plugins are not built (${join(PEER_DIR, p)} is missing): run \`npm run peers\` (scripts/peers.sh cni) first`);
    }
  }
}

interface CniResult {
  ips: { address: string }[];
}

/** Runs the reference bridge plugin in `host` for a container whose namespace is `pod`. */
function refBridge(command: 'ADD' | 'DEL', host: TestHost, pod: TestHost, containerId: string, config: object): CniResult | null {
  const r = spawnSync('ip', ['netns', 'exec', host.name, join(PEER_DIR, 'bridge')], {
    input: JSON.stringify(config),
    encoding: 'utf8',
    env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: `/run/netns/${pod.name}`, CNI_IFNAME: 'eth0', CNI_PATH: PEER_DIR },
  });
  assert.equal(r.status, 0, `reference bridge ${command} failed: ${r.stdout}${r.stderr}`);
  return command === 'ADD' ? (JSON.parse(r.stdout) as CniResult) : null;
}

function netConf(dataDir: string, network: string, backend?: string): object {
  return {
    cniVersion: '1.0.0',
    name: network,
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: true,
    ...(backend ? { ipMasqBackend: backend } : {}),
    ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00::/64' }]] },
  };
}

describe('compatibility with the reference bridge plugin (ipMasq)', () => {
  const hosts = new TestHosts();
  let dataDir: string;
  before(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'twill-fwref-'));
  });
  after(async () => {
    await hosts.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('iptables (ipMasqBackend unset): same chain name and rules; each side removes what the other set up', async () => {
    requirePeers();
    const host = await hosts.host('refh4');
    const pod = await hosts.host('refp4');
    const network = 'twref';
    const containerId = 'twref-ctr-1';
    const conf = netConf(dataDir, network);
    const result = refBridge('ADD', host, pod, containerId, conf)!;
    const m: ContainerMasq = { network, containerId, ifname: 'eth0', addresses: result.ips.map((ip) => ip.address) };
    assert.equal(m.addresses.length, 2);

    const ref4 = await natLines(host, 4);
    const ref6 = await natLines(host, 6);
    // The name Go computes (see names.test.ts), and the one twill computes, are the reference's.
    assert.ok(ref4.includes(':CNI-a9db8c16e4f720c723094195 -'), ref4.join('\n'));
    assert.equal(masqChainName(network, containerId), 'CNI-a9db8c16e4f720c723094195');
    assert.ok(ref4.some((l) => l.includes(`--comment ${JSON.stringify(masqComment(network, containerId))}`)), 'same comment');

    const fw = openFirewall('iptables', host.netns);
    await fw.checkContainerMasquerade(m);
    assert.deepEqual(
      (await fw.listContainerMasquerades()).map((o) => [o.family, o.network, o.containerId]).sort(),
      [
        [4, network, containerId],
        [6, network, containerId],
      ],
    );

    await fw.teardownContainerMasquerade({ network, containerId, ifname: 'eth0' });
    assert.deepEqual(await natLines(host, 4), BUILTIN_NAT, "twill's teardown removed the reference's rules");
    assert.deepEqual(await natLines(host, 6), BUILTIN_NAT);

    await fw.setupContainerMasquerade(m);
    assert.deepEqual(await natLines(host, 4), ref4, 'twill writes byte for byte what the reference wrote');
    assert.deepEqual(await natLines(host, 6), ref6);

    refBridge('DEL', host, pod, containerId, conf);
    assert.deepEqual(await natLines(host, 4), BUILTIN_NAT, "the reference's DEL removed twill's rules");
    assert.deepEqual(await natLines(host, 6), BUILTIN_NAT);
    refBridge('DEL', host, pod, containerId, conf);
  });

  it('nftables (ipMasqBackend "nftables"): same table, chains and rules; each side removes what the other set up', async () => {
    requirePeers();
    const host = await hosts.host('refhn');
    const pod = await hosts.host('refpn');
    const network = 'twref';
    const containerId = 'twref-ctr-2';
    const conf = netConf(dataDir, network, 'nftables');
    const result = refBridge('ADD', host, pod, containerId, conf)!;
    const m: ContainerMasq = { network, containerId, ifname: 'eth0', addresses: result.ips.map((ip) => ip.address) };

    const refText = await nftMasqLines(host);
    const refJson = await nftRulesetJson(host);
    assert.equal(refText.filter((l) => l.includes('masquerade comment')).length, 2, refText.join('\n'));

    const fw = openFirewall('nftables', host.netns);
    await fw.checkContainerMasquerade(m);
    assert.deepEqual((await fw.listContainerMasquerades()).map((o) => [o.family, o.network, o.ifname, o.containerId]).sort(), [
      [4, network, 'eth0', containerId],
      [6, network, 'eth0', containerId],
    ]);

    await fw.teardownContainerMasquerade({ network, containerId, ifname: 'eth0' });
    assert.deepEqual(await nftMasqLines(host), nftMasqTable([]), "twill's teardown removed the reference's rules");

    await fw.setupContainerMasquerade(m);
    assert.deepEqual(await nftMasqLines(host), refText, 'twill writes what the reference wrote');
    assert.deepEqual(await nftRulesetJson(host), refJson);

    refBridge('DEL', host, pod, containerId, conf);
    assert.deepEqual(await nftMasqLines(host), nftMasqTable([]), "the reference's DEL removed twill's rules");
    refBridge('DEL', host, pod, containerId, conf);
  });
});
