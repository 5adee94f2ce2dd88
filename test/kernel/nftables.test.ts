// readNftTable against tables written by nft itself (and by iptables-nft): the
// chains, handles, comments and jump targets it reports are the ones `nft -a -j`
// lists, in the namespace asked for and nowhere else.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNftTable } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

interface NftJsonRule {
  rule?: { chain: string; handle: number; comment?: string };
}

describe('nftables tables read over netlink', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let other: TestHost;
  let dir: string;
  before(async () => {
    h = await hosts.host('nft', {});
    other = await hosts.host('nft-other', {});
    dir = mkdtempSync(join(tmpdir(), 'twill-nft-read-'));
  });
  after(async () => {
    await hosts.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const nft = async (host: TestHost, script: string) => {
    const file = join(dir, `s${Math.random().toString(36).slice(2)}.nft`);
    writeFileSync(file, script);
    await host.exec('nft', ['-f', file]);
  };

  it('a missing table is null', async () => {
    assert.equal(await readNftTable(h.netns, 'ip', 'twill_test'), null);
  });

  it('reports chains, handles, comments and jumps as nft lists them', async () => {
    await nft(
      h,
      [
        'table ip twill_test {',
        '  chain target { }',
        '  chain other { }',
        '  chain entry {',
        '    type nat hook prerouting priority dstnat;',
        '    tcp dport 8080 jump target comment "ctr-1"',
        '    tcp dport 8081 goto other comment "dnat name: cbr0 id: ctr-2, with spaces"',
        '    counter',
        '  }',
        '}',
        'table ip6 twill_test {',
        '  chain only6 {',
        '  }',
        '}',
      ].join('\n'),
    );
    const got = await readNftTable(h.netns, 'ip', 'twill_test');
    assert.ok(got);
    assert.deepEqual(got.chains.map((c) => c.name).sort(), ['entry', 'other', 'target']);
    assert.deepEqual(got.chains.find((c) => c.name === 'entry'), { name: 'entry', type: 'nat', hook: 'prerouting', priority: -100 });
    assert.deepEqual(got.chains.find((c) => c.name === 'target'), { name: 'target', type: null, hook: null, priority: null });
    const listed = JSON.parse(await h.exec('nft', ['-a', '-j', 'list', 'table', 'ip', 'twill_test'])) as { nftables: NftJsonRule[] };
    const expected = listed.nftables.flatMap((x) => (x.rule ? [{ chain: x.rule.chain, handle: x.rule.handle, comment: x.rule.comment ?? null }] : []));
    assert.equal(expected.length, 3);
    assert.deepEqual(got.rules.map(({ chain, handle, comment }) => ({ chain, handle, comment })), expected);
    assert.deepEqual(got.rules.map((r) => r.jumps), [['target'], ['other'], []]);
    // tcp dport 8080: meta l4proto + cmp, payload + cmp; then the verdict (and nft's own counter).
    assert.deepEqual(got.rules.map((r) => r.exprs), [['meta', 'cmp', 'payload', 'cmp', 'immediate'], ['meta', 'cmp', 'payload', 'cmp', 'immediate'], ['counter']]);
    // The other family's table of the same name is another table.
    assert.deepEqual((await readNftTable(h.netns, 'ip6', 'twill_test'))?.chains.map((c) => c.name), ['only6']);
    // And another namespace has none of it.
    assert.equal(await readNftTable(other.netns, 'ip', 'twill_test'), null);
  });

  it("sees iptables-nft's chains and jumps in its nat table", async () => {
    await h.exec('iptables-nft', ['-t', 'nat', '-N', 'TWILL-TEST']);
    await h.exec('iptables-nft', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '80', '-j', 'TWILL-TEST']);
    const got = await readNftTable(h.netns, 'ip', 'nat');
    assert.ok(got);
    assert.ok(got.chains.some((c) => c.name === 'TWILL-TEST'), JSON.stringify(got.chains));
    assert.deepEqual(got.chains.find((c) => c.name === 'PREROUTING'), { name: 'PREROUTING', type: 'nat', hook: 'prerouting', priority: -100 });
    assert.ok(got.rules.some((r) => r.chain === 'PREROUTING' && r.jumps.includes('TWILL-TEST')), JSON.stringify(got.rules));
  });
});
