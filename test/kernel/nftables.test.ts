// readNftTable against tables written by nft itself (and by iptables-nft): the
// chains, handles, comments and jump targets it reports are the ones `nft -a -j`
// lists, in the namespace asked for and nowhere else.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendNftRules, isNotFound, parseIp, readNftTable, type NftRuleSpec } from '../../src/kernel/index.js';
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

describe('nftables rules appended over netlink', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let dir: string;
  before(async () => {
    h = await hosts.host('nftw', {});
    dir = mkdtempSync(join(tmpdir(), 'twill-nft-write-'));
  });
  after(async () => {
    await hosts.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const tables = (family: 'ip' | 'ip6') =>
    ['by_nft', 'by_twill'].map((t) => `table ${family} ${t} {\n chain hostports {\n }\n chain masquerading {\n  type nat hook postrouting priority 100;\n }\n}\n`).join('');
  const nftJson = async (family: string, table: string) => {
    const out = JSON.parse(await h.exec('nft', ['-j', 'list', 'table', family, table])) as { nftables: NftJsonRule[] };
    // What each rule is, without where it lives (table name, handle).
    return out.nftables.filter((x) => x.rule).map((x) => JSON.stringify({ ...x.rule, table: undefined, handle: undefined }));
  };
  const port = (p: number) => Buffer.from([p >> 8, p & 0xff]);
  const ip = (s: string) => parseIp(s, { op: 'test', subject: s }).bytes;

  it('nft lists them exactly as the same rules added by nft: DNAT with and without a host address, masquerades, a /0 prefix, IPv6, sctp', async () => {
    const cases: { family: 'ip' | 'ip6'; nft: string[]; rules: NftRuleSpec[] }[] = [
      {
        family: 'ip',
        nft: [
          'hostports tcp dport 30080 dnat to 10.244.1.2:80 comment "c1"',
          'hostports ip daddr 192.0.2.1 udp dport 53 dnat to 10.244.1.2:5353 comment "c1"',
          'masquerading ip saddr 10.244.1.2 ip daddr 10.244.1.2 masquerade comment "c1"',
          'masquerading ip saddr 0.0.0.0/0 ip daddr 10.244.1.2 masquerade',
        ],
        rules: [
          { chain: 'hostports', comment: 'c1', exprs: [{ kind: 'l4proto', proto: 6 }, { kind: 'payload', base: 'transport', offset: 2, value: port(30080) }, { kind: 'dnat', addr: ip('10.244.1.2'), port: 80 }] },
          { chain: 'hostports', comment: 'c1', exprs: [{ kind: 'payload', base: 'network', offset: 16, value: ip('192.0.2.1') }, { kind: 'l4proto', proto: 17 }, { kind: 'payload', base: 'transport', offset: 2, value: port(53) }, { kind: 'dnat', addr: ip('10.244.1.2'), port: 5353 }] },
          { chain: 'masquerading', comment: 'c1', exprs: [{ kind: 'payload', base: 'network', offset: 12, value: ip('10.244.1.2') }, { kind: 'payload', base: 'network', offset: 16, value: ip('10.244.1.2') }, { kind: 'masquerade' }] },
          { chain: 'masquerading', comment: null, exprs: [{ kind: 'payload', base: 'network', offset: 12, value: Buffer.alloc(4), mask: Buffer.alloc(4) }, { kind: 'payload', base: 'network', offset: 16, value: ip('10.244.1.2') }, { kind: 'masquerade' }] },
        ],
      },
      {
        family: 'ip6',
        nft: ['hostports sctp dport 30080 dnat to [fd00::2]:80 comment "c2"', 'masquerading ip6 saddr fd00::2 ip6 daddr fd00::2 masquerade comment "c2"'],
        rules: [
          { chain: 'hostports', comment: 'c2', exprs: [{ kind: 'l4proto', proto: 132 }, { kind: 'payload', base: 'transport', offset: 2, value: port(30080) }, { kind: 'dnat', addr: ip('fd00::2'), port: 80 }] },
          { chain: 'masquerading', comment: 'c2', exprs: [{ kind: 'payload', base: 'network', offset: 8, value: ip('fd00::2') }, { kind: 'payload', base: 'network', offset: 24, value: ip('fd00::2') }, { kind: 'masquerade' }] },
        ],
      },
    ];
    for (const c of cases) {
      const file = join(dir, `${c.family}.nft`);
      writeFileSync(file, tables(c.family) + c.nft.map((r) => `add rule ${c.family} by_nft ${r}\n`).join(''));
      await h.exec('nft', ['-f', file]);
      await appendNftRules(h.netns, c.family, 'by_twill', c.rules);
      const byNft = await nftJson(c.family, 'by_nft');
      assert.equal(byNft.length, c.nft.length);
      assert.deepEqual(await nftJson(c.family, 'by_twill'), byNft);
    }
  });

  it('all or nothing: a rule for a missing chain fails the batch (not found), and the others are not added', async () => {
    await assert.rejects(
      appendNftRules(h.netns, 'ip', 'by_twill', [
        { chain: 'hostports', comment: 'c3', exprs: [{ kind: 'masquerade' }] },
        { chain: 'nochain', comment: 'c3', exprs: [{ kind: 'masquerade' }] },
      ]),
      (e: Error) => isNotFound(e) && /add nftables rules table ip by_twill in netns/.test(e.message),
    );
    assert.ok(!(await nftJson('ip', 'by_twill')).some((r) => r.includes('"c3"')));
    await assert.rejects(appendNftRules(h.netns, 'ip', 'no_table', [{ chain: 'x', comment: null, exprs: [{ kind: 'masquerade' }] }]), (e: Error) => isNotFound(e));
  });
});
