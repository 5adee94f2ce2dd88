// The nftables portmapper's two ways to ADD: a container seen for the first time on
// a node whose shared chains are intact adds only its own rules (the shared rules
// keep their handles: nothing was rewritten); anything else (first container, a
// damaged shared chain, conditions, a repeated ADD) rewrites the shared chains as
// the reference does. Either way the table ends up the same.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openPortmapper } from '../../src/firewall/index.js';
import type { ContainerPortmap } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

interface JsonRule {
  rule?: { chain: string; handle: number; comment?: string; expr: unknown[] };
}

const pm = (containerId: string, address: string, hostPort: number, conditions: string[] = []): ContainerPortmap => ({
  network: 'cbr0',
  containerId,
  address,
  mappings: [{ hostPort, containerPort: 80, protocol: 'tcp', hostIP: '' }],
  snat: true,
  markMasqBit: 13,
  externalSetMarkChain: null,
  conditions,
  masqAll: false,
});

describe('portmap on nftables: a new container adds only its own rules', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('pmnft', {});
  });
  after(() => hosts.cleanup());

  const rules = async () => {
    const l = JSON.parse(await h.exec('nft', ['-a', '-j', 'list', 'table', 'ip', 'cni_hostport'])) as { nftables: JsonRule[] };
    return l.nftables.flatMap((x) => (x.rule ? [x.rule] : []));
  };
  const shared = async () => (await rules()).filter((r) => ['hostports_all', 'prerouting', 'output'].includes(r.chain)).map((r) => `${r.chain}#${r.handle}`);
  const own = async (id: string) => (await rules()).filter((r) => r.comment === id).map((r) => r.chain);
  const fw = () => openPortmapper('nftables', h.netns);

  it('the first container creates the shared chains', async () => {
    await fw().setupPortmap(pm('ctr-a', '10.244.1.2/24', 8080));
    assert.deepEqual(await own('ctr-a'), ['hostports', 'masquerading', 'masquerading']);
    assert.equal((await shared()).length, 4);
  });

  it('the next one leaves them alone: same rules, same handles', async () => {
    const before = await shared();
    await fw().setupPortmap(pm('ctr-b', '10.244.1.3/24', 8081));
    assert.deepEqual(await own('ctr-b'), ['hostports', 'masquerading', 'masquerading']);
    assert.deepEqual(await shared(), before, 'no shared rule was rewritten');
    assert.deepEqual(await own('ctr-a'), ['hostports', 'masquerading', 'masquerading'], 'the first container keeps its rules');
  });

  it('a damaged shared chain is rewritten by the next ADD', async () => {
    const pre = (await rules()).find((r) => r.chain === 'prerouting')!;
    await h.exec('nft', ['delete', 'rule', 'ip', 'cni_hostport', 'prerouting', 'handle', String(pre.handle)]);
    await fw().setupPortmap(pm('ctr-c', '10.244.1.4/24', 8082));
    const now = (await rules()).filter((r) => r.chain === 'prerouting');
    assert.equal(now.length, 1, 'the entry rule is back');
    assert.deepEqual(await own('ctr-c'), ['hostports', 'masquerading', 'masquerading']);
  });

  it('conditions rewrite the shared chains; the next plain ADD rewrites them back', async () => {
    await fw().setupPortmap(pm('ctr-d', '10.244.1.5/24', 8083, ['ip saddr 10.0.0.0/8']));
    const withCond = (await rules()).find((r) => r.chain === 'prerouting')!;
    assert.equal(withCond.expr.length, 3, JSON.stringify(withCond.expr));
    await fw().setupPortmap(pm('ctr-e', '10.244.1.6/24', 8084));
    const plain = (await rules()).find((r) => r.chain === 'prerouting')!;
    assert.equal(plain.expr.length, 2, 'the last ADD without conditions wins, as in the reference');
  });

  it('a repeated ADD changes nothing, and DEL removes exactly one container', async () => {
    const state = await rules();
    await fw().setupPortmap(pm('ctr-b', '10.244.1.3/24', 8081));
    assert.deepEqual(await rules(), state);
    await fw().teardownPortmap({ network: 'cbr0', containerId: 'ctr-b' });
    assert.deepEqual(await own('ctr-b'), []);
    assert.deepEqual(await own('ctr-a'), ['hostports', 'masquerading', 'masquerading']);
  });
});

describe('portmap on nftables: the fast path never skips a missing chain', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('pmnft2', {});
  });
  after(() => hosts.cleanup());

  it('a first container without snat, then one with it: the masquerading chain is created', async () => {
    const fw = openPortmapper('nftables', h.netns);
    await fw.setupPortmap({ ...pm('ctr-nosnat', '10.244.1.2/24', 8080), snat: false });
    assert.doesNotMatch(await h.exec('nft', ['list', 'table', 'ip', 'cni_hostport']), /chain masquerading/);
    await fw.setupPortmap(pm('ctr-snat', '10.244.1.3/24', 8081));
    const table = await h.exec('nft', ['list', 'table', 'ip', 'cni_hostport']);
    assert.match(table, /chain masquerading \{\s*type nat hook postrouting priority srcnat; policy accept;/);
    assert.match(table, /ip saddr 10\.244\.1\.3 ip daddr 10\.244\.1\.3 masquerade comment "ctr-snat"/);
  });
});
