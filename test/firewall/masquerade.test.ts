import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FirewallError, openFirewall, type ContainerMasq, type Firewall } from '../../src/firewall/index.js';
import { Iptables } from '../../src/firewall/iptables.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { natLines, natLinesWith, nftMasqLines, nftMasqTable, nftRulesetJson } from './oracle.js';

// Names as Go computes them with the reference's formulas (see names.test.ts).
const CH1 = 'CNI-64e75f641d11615844d681b7'; // cbr0 + abc
const CH2 = 'CNI-56a6b8be880ae7b8cb3019be'; // cbr0 + def
const C1 = String.raw`"name: \"cbr0\" id: \"abc\""`;
const C2 = String.raw`"name: \"cbr0\" id: \"def\""`;
const N1 = 'cb6e746fae1a4d6c-e65086f8a75535c6, net: cbr0, if: eth0, id: abc';
const N2 = 'cb6e746fae1a4d6c-0c367c7c160914f7, net: cbr0, if: eth0, id: def';

const M1: ContainerMasq = { network: 'cbr0', containerId: 'abc', ifname: 'eth0', addresses: ['10.244.1.5/24', 'fd00::5/64'] };
const M2: ContainerMasq = { network: 'cbr0', containerId: 'def', ifname: 'eth0', addresses: ['10.244.1.6/24'] };
const ref = (m: ContainerMasq) => ({ network: m.network, containerId: m.containerId, ifname: m.ifname });

const BUILTIN_NAT = [':PREROUTING ACCEPT', ':INPUT ACCEPT', ':OUTPUT ACCEPT', ':POSTROUTING ACCEPT'];

const ipt4 = (chain: string, ip: string, subnet: string, c: string) => [
  `:${chain} -`,
  `-A POSTROUTING -s ${ip}/32 -m comment --comment ${c} -j ${chain}`,
  `-A ${chain} -d ${subnet} -m comment --comment ${c} -j ACCEPT`,
  `-A ${chain} ! -d 224.0.0.0/4 -m comment --comment ${c} -j MASQUERADE`,
];
const ipt6 = (chain: string, ip: string, subnet: string, c: string) => [
  `:${chain} -`,
  `-A POSTROUTING -s ${ip}/128 -m comment --comment ${c} -j ${chain}`,
  `-A ${chain} -d ${subnet} -m comment --comment ${c} -j ACCEPT`,
  `-A ${chain} ! -d ff00::/8 -m comment --comment ${c} -j MASQUERADE`,
];
const nftRule = (ip: string, subnet: string, c: string) =>
  ip.includes(':') ? `ip6 saddr ${ip} ip6 daddr != ${subnet} masquerade comment "${c}"` : `ip saddr ${ip} ip daddr != ${subnet} masquerade comment "${c}"`;

/** iptables-save prints a chain's declaration before the rules: order the expectation the same way. */
function saveOrder(lines: string[]): string[] {
  const decl = lines.filter((l) => l.startsWith(':'));
  const post = lines.filter((l) => l.startsWith('-A POSTROUTING'));
  const rest = lines.filter((l) => l.startsWith('-A ') && !l.startsWith('-A POSTROUTING'));
  return [...BUILTIN_NAT, ...decl, ...post, ...rest];
}

describe('container masquerade, iptables backend', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let fw: Firewall;
  before(async () => {
    h = await hosts.host('fwipt');
    fw = openFirewall('iptables', h.netns);
  });
  after(() => hosts.cleanup());

  it('setup creates exactly the reference chain and rules, IPv4 and IPv6', async () => {
    await fw.setupContainerMasquerade(M1);
    assert.deepEqual(await natLines(h, 4), saveOrder(ipt4(CH1, '10.244.1.5', '10.244.1.0/24', C1)));
    assert.deepEqual(await natLines(h, 6), saveOrder(ipt6(CH1, 'fd00::5', 'fd00::/64', C1)));
    assert.equal((await h.exec('iptables-legacy-save', [])).trim(), '', 'nothing in the other variant');
    assert.deepEqual(await nftMasqLines(h), [], 'nothing in the nftables layout');
  });

  it('setup twice changes nothing', async () => {
    const before4 = await natLines(h, 4);
    const before6 = await natLines(h, 6);
    await fw.setupContainerMasquerade(M1);
    assert.deepEqual(await natLines(h, 4), before4);
    assert.deepEqual(await natLines(h, 6), before6);
  });

  it('check passes, then names what is missing, and setup repairs it', async () => {
    await fw.checkContainerMasquerade(M1);
    await h.exec('iptables-nft', ['-w', '-t', 'nat', '-D', CH1, '!', '-d', '224.0.0.0/4', '-j', 'MASQUERADE', '-m', 'comment', '--comment', 'name: "cbr0" id: "abc"']);
    await h.exec('ip6tables-nft', ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-s', 'fd00::5', '-j', CH1, '-m', 'comment', '--comment', 'name: "cbr0" id: "abc"']);
    await assert.rejects(fw.checkContainerMasquerade(M1), (e: unknown) => {
      assert.ok(e instanceof FirewallError);
      assert.match(e.message, /masquerade of container "abc" on network "cbr0" is incomplete \(iptables-nft, netns "[^"]+"\)/);
      assert.ok(e.message.includes(`IPv4 nat: rule missing: -A ${CH1} ! -d 224.0.0.0/4 -m comment --comment ${C1} -j MASQUERADE`), e.message);
      assert.ok(e.message.includes(`IPv6 nat: rule missing: -A POSTROUTING -s fd00::5/128 -m comment --comment ${C1} -j ${CH1}`), e.message);
      return true;
    });
    await assert.rejects(fw.checkContainerMasquerade({ ...M1, addresses: ['10.244.1.9/24'] }), /rule missing: -A POSTROUTING -s 10.244.1.9\/32/);
    await fw.setupContainerMasquerade(M1);
    await fw.checkContainerMasquerade(M1);
    assert.deepEqual(await natLines(h, 4), saveOrder(ipt4(CH1, '10.244.1.5', '10.244.1.0/24', C1)));
    assert.deepEqual(await natLines(h, 6), saveOrder(ipt6(CH1, 'fd00::5', 'fd00::/64', C1)));
  });

  it('lists the masquerades it finds, with network and container read back', async () => {
    await fw.setupContainerMasquerade(M2);
    const list = await fw.listContainerMasquerades();
    assert.deepEqual(
      list.map((o) => [o.family, o.id, o.network, o.containerId, o.sources]).sort(),
      [
        [4, CH1, 'cbr0', 'abc', ['10.244.1.5']],
        [4, CH2, 'cbr0', 'def', ['10.244.1.6']],
        [6, CH1, 'cbr0', 'abc', ['fd00::5']],
      ].sort(),
    );
  });

  it("teardown, without addresses, removes exactly one container's rules", async () => {
    await fw.teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await natLines(h, 4), saveOrder(ipt4(CH2, '10.244.1.6', '10.244.1.0/24', C2)));
    assert.deepEqual(await natLines(h, 6), BUILTIN_NAT);
    await fw.checkContainerMasquerade(M2);
  });

  it('teardown when nothing is there succeeds, and changes nothing', async () => {
    const before4 = await natLines(h, 4);
    await fw.teardownContainerMasquerade(ref(M1));
    await fw.teardownContainerMasquerade({ network: 'never', containerId: 'seen', ifname: 'eth0', addresses: ['10.9.9.9/24'] });
    assert.deepEqual(await natLines(h, 4), before4);
    await fw.teardownContainerMasquerade(ref(M2));
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT);
  });

  it('a new address for the same container replaces the old jump', async () => {
    await fw.setupContainerMasquerade(M2);
    const moved = { ...M2, addresses: ['10.244.2.7/24'] };
    await fw.setupContainerMasquerade(moved);
    assert.deepEqual(await natLinesWith(h, 4, CH2), [`:${CH2} -`, ...ipt4(CH2, '10.244.2.7', '10.244.2.0/24', C2).slice(1)]);
    await fw.teardownContainerMasquerade(ref(M2));
    assert.deepEqual(await natLinesWith(h, 4, 'CNI-'), []);
  });

  it('teardown also removes the container chain when another process left a jump to it', async () => {
    // The reference (v0.x) jumped from "-s <ip>/<prefix>": its teardown tries both forms.
    await fw.setupContainerMasquerade(M2);
    await h.exec('iptables-nft', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', '10.244.1.0/24', '-j', CH2, '-m', 'comment', '--comment', 'name: "cbr0" id: "def"']);
    await fw.teardownContainerMasquerade(ref(M2));
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT);
  });

  it('a bad address is an error naming the container, and changes nothing', async () => {
    await assert.rejects(fw.setupContainerMasquerade({ ...M2, addresses: ['10.244.1.300/24'] }), /container "def".*10\.244\.1\.300\/24/);
    await assert.rejects(fw.setupContainerMasquerade({ ...M2, addresses: ['10.244.1.3'] }), /not a CIDR/);
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT);
  });

  it('a container ID too long for a comment: iptables cuts it at 255 bytes, and twill compares with the cut form', async () => {
    const m = { ...M2, containerId: 'x'.repeat(300) };
    await fw.setupContainerMasquerade(m);
    const lines = await natLines(h, 4);
    const comments = lines.filter((l) => l.startsWith('-A')).map((l) => /--comment "(.*)" -j/.exec(l)?.[1]);
    assert.equal(comments.length, 3);
    for (const c of comments) assert.equal(c?.replaceAll('\\"', '"').length, 255);
    await fw.setupContainerMasquerade(m);
    assert.deepEqual(await natLines(h, 4), lines, 'still idempotent');
    await fw.checkContainerMasquerade(m);
    await fw.teardownContainerMasquerade(ref(m));
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT);
  });

  it('a failed batch changes nothing, and its error shows the command, the namespace and the line', async () => {
    const ipt = new Iptables('nft', 4, h.netns);
    await assert.rejects(ipt.restore(['*nat', ':TWHALF - [0:0]', '-A TWNOSUCH -j ACCEPT', 'COMMIT'], 'test batch'), (e: unknown) => {
      assert.ok(e instanceof FirewallError);
      assert.ok(e.message.startsWith(`test batch in netns "${h.name}": \`iptables-nft-restore -w --noflush\` exited with `), e.message);
      assert.ok(e.message.endsWith('line 3: -A TWNOSUCH -j ACCEPT'), e.message);
      assert.ok(e.stderr.length > 0);
      return true;
    });
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT, 'atomic: TWHALF was not created');
  });
});

describe('container masquerade, iptables-legacy', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('where legacy holds the rules, twill writes there, checks and removes', async () => {
    const h = await hosts.host('fwleg');
    await h.exec('iptables-legacy', ['-w', '-t', 'filter', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT']);
    const fw = openFirewall('iptables', h.netns);
    await fw.setupContainerMasquerade(M1);
    assert.deepEqual(await natLines(h, 4, 'legacy'), saveOrder(ipt4(CH1, '10.244.1.5', '10.244.1.0/24', C1)));
    assert.deepEqual(await natLines(h, 6, 'legacy'), saveOrder(ipt6(CH1, 'fd00::5', 'fd00::/64', C1)));
    assert.deepEqual(await natLines(h, 4, 'nft'), [], 'nothing in iptables-nft');
    await fw.setupContainerMasquerade(M1);
    assert.deepEqual(await natLinesWith(h, 4, CH1, 'legacy'), ipt4(CH1, '10.244.1.5', '10.244.1.0/24', C1), 'idempotent');
    await fw.checkContainerMasquerade(M1);
    await fw.teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await natLines(h, 4, 'legacy'), BUILTIN_NAT);
    assert.deepEqual(await natLines(h, 6, 'legacy'), BUILTIN_NAT);
  });

  it('teardown also finds rules left in the variant not in use (written by a plugin that used the other one)', async () => {
    const h = await hosts.host('fwmixed');
    for (let i = 0; i < 8; i++) await h.exec('iptables-nft', ['-w', '-t', 'filter', '-A', 'INPUT', '-s', `192.0.2.${i + 1}`, '-j', 'ACCEPT']);
    const comment = 'name: "cbr0" id: "abc"';
    await h.exec('iptables-legacy', ['-w', '-t', 'nat', '-N', CH1]);
    await h.exec('iptables-legacy', ['-w', '-t', 'nat', '-A', CH1, '-d', '10.244.1.5/24', '-j', 'ACCEPT', '-m', 'comment', '--comment', comment]);
    await h.exec('iptables-legacy', ['-w', '-t', 'nat', '-A', CH1, '!', '-d', '224.0.0.0/4', '-j', 'MASQUERADE', '-m', 'comment', '--comment', comment]);
    await h.exec('iptables-legacy', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', '10.244.1.5', '-j', CH1, '-m', 'comment', '--comment', comment]);
    const fw = openFirewall('iptables', h.netns);
    await fw.teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await natLines(h, 4, 'legacy'), BUILTIN_NAT);
  });
});

describe('container masquerade, nftables backend', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let fw: Firewall;
  before(async () => {
    h = await hosts.host('fwnft');
    fw = openFirewall('nftables', h.netns);
  });
  after(() => hosts.cleanup());

  it("setup creates exactly the reference's table, chains and rules, IPv4 and IPv6", async () => {
    await fw.setupContainerMasquerade(M1);
    assert.deepEqual(await nftMasqLines(h), nftMasqTable([nftRule('10.244.1.5', '10.244.1.0/24', N1), nftRule('fd00::5', 'fd00::/64', N1)]));
    assert.deepEqual(await natLines(h, 4), [], 'no iptables rules');
  });

  it('setup twice changes nothing (not even rule handles)', async () => {
    const before = await h.exec('nft', ['-a', 'list', 'ruleset']);
    await fw.setupContainerMasquerade(M1);
    assert.equal(await h.exec('nft', ['-a', 'list', 'ruleset']), before);
  });

  it('check passes, then names what is missing, and setup repairs it', async () => {
    await fw.checkContainerMasquerade(M1);
    const listing = await h.exec('nft', ['-a', 'list', 'chain', 'inet', 'cni_plugins_masquerade', 'masq_checks']);
    const handle = /ip6 saddr fd00::5 .* # handle (\d+)/.exec(listing)?.[1];
    assert.ok(handle, listing);
    await h.exec('nft', ['delete', 'rule', 'inet', 'cni_plugins_masquerade', 'masq_checks', 'handle', handle]);
    await h.exec('nft', ['flush', 'chain', 'inet', 'cni_plugins_masquerade', 'postrouting']);
    await assert.rejects(fw.checkContainerMasquerade(M1), (e: unknown) => {
      assert.ok(e instanceof FirewallError);
      assert.match(e.message, /masquerade of container "abc" interface "eth0" on network "cbr0" is incomplete \(nftables table inet cni_plugins_masquerade, netns "[^"]+"\)/);
      assert.ok(e.message.includes(`rule missing in chain masq_checks: ${nftRule('fd00::5', 'fd00::/64', N1)}`), e.message);
      assert.ok(e.message.includes('chain postrouting does not hold exactly'), e.message);
      return true;
    });
    await fw.setupContainerMasquerade(M1);
    await fw.checkContainerMasquerade(M1);
    assert.deepEqual(await nftMasqLines(h), nftMasqTable([nftRule('10.244.1.5', '10.244.1.0/24', N1), nftRule('fd00::5', 'fd00::/64', N1)]));
  });

  it('the interface is part of the identity: another ifname of the same container is another attachment', async () => {
    await assert.rejects(fw.checkContainerMasquerade({ ...M1, ifname: 'net1' }), /rule missing/);
  });

  it('lists the masquerades it finds', async () => {
    await fw.setupContainerMasquerade(M2);
    const list = await fw.listContainerMasquerades();
    assert.deepEqual(
      list.map((o) => [o.family, o.id, o.network, o.ifname, o.containerId, o.sources]).sort(),
      [
        [4, N1.slice(0, 33), 'cbr0', 'eth0', 'abc', ['10.244.1.5']],
        [4, N2.slice(0, 33), 'cbr0', 'eth0', 'def', ['10.244.1.6']],
        [6, N1.slice(0, 33), 'cbr0', 'eth0', 'abc', ['fd00::5']],
      ].sort(),
    );
  });

  it("teardown, without addresses, removes exactly one container's rules; the shared chains stay", async () => {
    await fw.teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await nftMasqLines(h), nftMasqTable([nftRule('10.244.1.6', '10.244.1.0/24', N2)]));
    await fw.checkContainerMasquerade(M2);
  });

  it('teardown when nothing is there succeeds, also without the table', async () => {
    await fw.teardownContainerMasquerade(ref(M1));
    await fw.teardownContainerMasquerade(ref(M2));
    assert.deepEqual(await nftMasqLines(h), nftMasqTable([]));
    const bare = await hosts.host('fwnftbare');
    await openFirewall('nftables', bare.netns).teardownContainerMasquerade(ref(M1));
    assert.equal((await bare.exec('nft', ['list', 'ruleset'])).trim(), '');
  });

  it('a full-length prefix (/32, /128) is matched as nft prints it', async () => {
    const m = { ...M2, addresses: ['10.244.9.9/32', 'fd00::9/128'] };
    await fw.setupContainerMasquerade(m);
    await fw.checkContainerMasquerade(m);
    assert.ok((await nftMasqLines(h)).includes(nftRule('10.244.9.9', '10.244.9.9', N2)));
    await fw.teardownContainerMasquerade(ref(m));
  });

  it('leaves tables it does not own alone', async () => {
    await h.exec('nft', ['add table inet twother; add chain inet twother c; add rule inet twother c masquerade comment "cb6e746fae1a4d6c-e65086f8a75535c6"']);
    const before = await nftRulesetJson(h);
    await fw.setupContainerMasquerade(M1);
    await fw.teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await nftRulesetJson(h), before);
  });
});

describe('teardown covers both backends, as the reference does', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('set up with one backend, torn down with the other', async () => {
    const h = await hosts.host('fwcross');
    await openFirewall('nftables', h.netns).setupContainerMasquerade(M1);
    await openFirewall('iptables', h.netns).setupContainerMasquerade(M2);
    await openFirewall('iptables', h.netns).teardownContainerMasquerade(ref(M1));
    assert.deepEqual(await nftMasqLines(h), nftMasqTable([]));
    await openFirewall('nftables', h.netns).teardownContainerMasquerade(ref(M2));
    assert.deepEqual(await natLines(h, 4), BUILTIN_NAT);
  });
});
