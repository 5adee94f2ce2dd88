// The node agent's cluster rules (flanneld's masquerade and forward rules) on both
// backends: the exact rules, idempotence, repair of what others changed, removal that
// leaves others' rules alone, and where the accept rules go when someone's FORWARD drops.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FirewallError, openClusterRules, type ClusterRules, type ClusterRulesSpec, type Correction } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { C4, C6, NAT_BUILTIN, P4, P6, allIptables, filterBuiltin, flannelFwd, flannelNat, nftRuleset, nftTable, nftTableLines, tableLines } from './cluster_oracle.js';

const SPEC: ClusterRulesSpec = { clusterCidrs: { ipv4: C4, ipv6: C6 }, podSubnets: { ipv4: P4, ipv6: P6 }, ipMasq: true };
const NO_MASQ: ClusterRulesSpec = { ...SPEC, ipMasq: false };

const natOf = (family: 4 | 6) => [...NAT_BUILTIN, ':FLANNEL-POSTRTG -', ...flannelNat(family === 4 ? C4 : C6, family === 4 ? P4 : P6, family)];
const filterOf = (family: 4 | 6, policy = 'ACCEPT') => [...filterBuiltin(policy), ':FLANNEL-FWD -', ...flannelFwd(family === 4 ? C4 : C6)];
const kinds = (cs: Correction[]) => cs.map((c) => `${c.kind} ${c.firewall} ${c.family} ${c.object}`);

async function ipt(h: TestHost, variant: 'nft' | 'legacy', family: 4 | 6, args: string[]): Promise<void> {
  await h.exec(`${family === 4 ? 'iptables' : 'ip6tables'}-${variant}`, ['-w', ...args]);
}

/** Ensure puts everything back as it was; returns what it corrected. */
async function repaired(cr: ClusterRules, spec = SPEC): Promise<Correction[]> {
  const corrections = await cr.ensure(spec);
  assert.deepEqual(await cr.check(spec), [], 'nothing left to correct');
  assert.deepEqual(await cr.ensure(spec), [], 'and a second ensure corrects nothing');
  return corrections;
}

describe('cluster rules, iptables backend', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let cr: ClusterRules;
  before(async () => {
    h = await hosts.host('crip');
    cr = openClusterRules('iptables', h.netns);
  });
  after(() => hosts.cleanup());

  it("ensure writes flanneld's chains and rules, in flanneld's order, IPv4 and IPv6", async () => {
    assert.equal((await cr.check(SPEC)).length, 8, 'check names each missing piece first');
    const corrections = await cr.ensure(SPEC);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), natOf(4));
    assert.deepEqual(await tableLines(h, 4, 'nft', 'filter'), filterOf(4));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'nat'), natOf(6));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterOf(6));
    assert.equal((await h.exec('iptables-legacy-save', [])).trim(), '', 'nothing in iptables-legacy');
    assert.deepEqual(await nftTableLines(h, 'ip', 'flannel-ipv4'), [], 'no nftables table');
    assert.deepEqual(kinds(corrections), [
      'missing iptables-nft 4 nat POSTROUTING',
      'missing iptables-nft 4 nat FLANNEL-POSTRTG',
      'missing iptables-nft 4 filter FORWARD',
      'missing iptables-nft 4 filter FLANNEL-FWD',
      'missing iptables-nft 6 nat POSTROUTING',
      'missing iptables-nft 6 nat FLANNEL-POSTRTG',
      'missing iptables-nft 6 filter FORWARD',
      'missing iptables-nft 6 filter FLANNEL-FWD',
    ]);
    assert.equal(corrections[1].problem, 'IPv4 iptables-nft: nat: chain FLANNEL-POSTRTG is missing');
  });

  it('ensure twice changes nothing and returns no corrections', async () => {
    const before = await allIptables(h);
    assert.deepEqual(await cr.ensure(SPEC), []);
    assert.deepEqual(await cr.check(SPEC), []);
    assert.deepEqual(await allIptables(h), before);
  });

  it('a flushed chain, a deleted rule, a removed jump: check names them, ensure restores them and says so', async () => {
    await ipt(h, 'nft', 4, ['-t', 'nat', '-F', 'FLANNEL-POSTRTG']);
    await ipt(h, 'nft', 6, ['-t', 'filter', '-D', 'FLANNEL-FWD', '-d', C6, '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']);
    await ipt(h, 'nft', 4, ['-t', 'filter', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    const problems = await cr.check(SPEC);
    assert.ok(problems.some((p) => p.startsWith('IPv4 iptables-nft: nat: FLANNEL-POSTRTG lacks 6 rules: "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000')), problems.join('\n'));
    assert.ok(problems.includes(`IPv6 ip6tables-nft: filter: FLANNEL-FWD lacks the rule "-A FLANNEL-FWD -d ${C6} -m comment --comment "flanneld forward" -j ACCEPT"`), problems.join('\n'));
    assert.ok(problems.includes('IPv4 iptables-nft: filter: the jump from FORWARD to FLANNEL-FWD is missing'), problems.join('\n'));
    assert.deepEqual(kinds(await repaired(cr)), ['missing iptables-nft 4 nat FLANNEL-POSTRTG', 'missing iptables-nft 4 filter FORWARD', 'missing iptables-nft 6 filter FLANNEL-FWD']);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), natOf(4));
    assert.deepEqual(await tableLines(h, 4, 'nft', 'filter'), filterOf(4));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterOf(6));
  });

  it('reordered rules, a foreign rule in a chain of ours, a duplicated jump: rewritten, as misordered / changed', async () => {
    const markRule = ['-m', 'mark', '--mark', '0x4000/0x4000', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'RETURN'];
    await ipt(h, 'nft', 4, ['-t', 'nat', '-D', 'FLANNEL-POSTRTG', ...markRule]);
    await ipt(h, 'nft', 4, ['-t', 'nat', '-A', 'FLANNEL-POSTRTG', ...markRule]);
    await ipt(h, 'nft', 6, ['-t', 'filter', '-I', 'FLANNEL-FWD', '1', '-s', 'fd10::5', '-j', 'DROP']);
    await ipt(h, 'nft', 6, ['-t', 'nat', '-A', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG']);
    const corrections = await repaired(cr);
    assert.deepEqual(kinds(corrections), ['misordered iptables-nft 4 nat FLANNEL-POSTRTG', 'changed iptables-nft 6 nat POSTROUTING', 'changed iptables-nft 6 filter FLANNEL-FWD']);
    assert.equal(corrections[1].problem, 'IPv6 ip6tables-nft: nat: POSTROUTING jumps to FLANNEL-POSTRTG 2 times');
    assert.equal(corrections[2].problem, 'IPv6 ip6tables-nft: filter: FLANNEL-FWD holds a rule not of flannel\'s: "-A FLANNEL-FWD -s fd10::5/128 -j DROP"');
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), natOf(4));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'nat'), natOf(6));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterOf(6));
  });

  it('`iptables -F`, `iptables -t nat -F -X`: everything comes back', async () => {
    await ipt(h, 'nft', 4, ['-F']);
    await ipt(h, 'nft', 6, ['-t', 'nat', '-F']);
    await ipt(h, 'nft', 6, ['-t', 'nat', '-X']);
    assert.deepEqual(kinds(await repaired(cr)), [
      'missing iptables-nft 4 filter FORWARD',
      'missing iptables-nft 4 filter FLANNEL-FWD',
      'missing iptables-nft 6 nat POSTROUTING',
      'missing iptables-nft 6 nat FLANNEL-POSTRTG',
    ]);
    assert.deepEqual(await allIptables(h), {
      'nft4 nat': natOf(4), 'nft4 filter': filterOf(4), 'nft6 nat': natOf(6), 'nft6 filter': filterOf(6),
      'legacy4 nat': [], 'legacy4 filter': [], 'legacy6 nat': [], 'legacy6 filter': [],
    });
  });

  it('an older pod subnet and cluster network are replaced in one batch', async () => {
    const moved: ClusterRulesSpec = { clusterCidrs: { ipv4: '10.96.0.0/12' }, podSubnets: { ipv4: '10.97.3.0/24' }, ipMasq: true };
    const corrections = await cr.ensure(moved);
    assert.deepEqual(kinds(corrections), ['changed iptables-nft 4 nat FLANNEL-POSTRTG', 'changed iptables-nft 4 filter FLANNEL-FWD', 'stale iptables-nft 6 nat FLANNEL-POSTRTG', 'stale iptables-nft 6 filter FLANNEL-FWD']);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), [...NAT_BUILTIN, ':FLANNEL-POSTRTG -', ...flannelNat('10.96.0.0/12', '10.97.3.0/24', 4)]);
    assert.deepEqual(await tableLines(h, 6, 'nft', 'nat'), NAT_BUILTIN);
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterBuiltin());
    await repaired(cr);
  });

  it('ipMasq false: no masquerade; turning it off removes FLANNEL-POSTRTG and its jump', async () => {
    const off = await cr.ensure(NO_MASQ);
    assert.deepEqual(kinds(off), ['stale iptables-nft 4 nat FLANNEL-POSTRTG', 'stale iptables-nft 6 nat FLANNEL-POSTRTG']);
    assert.equal(off[0].problem, 'IPv4 iptables-nft: nat: chain FLANNEL-POSTRTG is not wanted here (ipMasq is off)');
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), NAT_BUILTIN);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'filter'), filterOf(4));
    assert.deepEqual(await cr.ensure(NO_MASQ), []);
    const fresh = await hosts.host('cripnomasq');
    await openClusterRules('iptables', fresh.netns).ensure(NO_MASQ);
    assert.deepEqual(await tableLines(fresh, 4, 'nft', 'nat'), [], 'not even the nat table');
    assert.deepEqual(await tableLines(fresh, 6, 'nft', 'filter'), filterOf(6));
  });

  it('--random-fully can be turned off (flanneld --ip-masq-fully-random-disable)', async () => {
    assert.deepEqual(kinds(await cr.ensure({ ...SPEC, randomFully: false })), [
      'missing iptables-nft 4 nat POSTROUTING', 'missing iptables-nft 4 nat FLANNEL-POSTRTG', 'missing iptables-nft 6 nat POSTROUTING', 'missing iptables-nft 6 nat FLANNEL-POSTRTG',
    ]);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), [...NAT_BUILTIN, ':FLANNEL-POSTRTG -', ...flannelNat(C4, P4, 4, false)]);
    assert.deepEqual(kinds(await cr.ensure(SPEC)), ['changed iptables-nft 4 nat FLANNEL-POSTRTG', 'changed iptables-nft 6 nat FLANNEL-POSTRTG']);
  });

  it('forwardRules false (flanneld --iptables-forward-rules=false): FLANNEL-FWD and its jump go; back on, they return', async () => {
    await repaired(cr);
    const off = await cr.ensure({ ...SPEC, forwardRules: false });
    assert.deepEqual(kinds(off), ['stale iptables-nft 4 filter FLANNEL-FWD', 'stale iptables-nft 6 filter FLANNEL-FWD']);
    assert.match(off[0]!.problem, /forward rules are off \(--iptables-forward-rules=false\)/);
    for (const family of [4, 6] as const) {
      assert.deepEqual(await tableLines(h, family, 'nft', 'filter'), filterBuiltin('ACCEPT'));
      assert.deepEqual(await tableLines(h, family, 'nft', 'nat'), natOf(family), 'the masquerade stays');
    }
    assert.deepEqual(await cr.ensure({ ...SPEC, forwardRules: false }), []);
    assert.ok((await repaired(cr)).length > 0);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'filter'), filterOf(4));
  });

  it('bad input is an error naming the field, and changes nothing', async () => {
    const before = await allIptables(h);
    const bad: [ClusterRulesSpec, RegExp][] = [
      [{ ...SPEC, clusterCidrs: { ipv4: '10.244.0.0' } }, /clusterCidrs.ipv4 "10.244.0.0" is not a CIDR/],
      [{ ...SPEC, clusterCidrs: { ipv4: '10.244.0.300/16' } }, /clusterCidrs.ipv4 "10.244.0.300\/16" is not a valid IPv4 CIDR/],
      [{ ...SPEC, clusterCidrs: { ipv4: C6 } }, /clusterCidrs.ipv4 "fd10::\/56" is an IPv6 CIDR where an IPv4 one belongs/],
      [{ ...SPEC, clusterCidrs: { ipv4: C4 }, podSubnets: { ipv4: P4, ipv6: P6 } }, /podSubnets.ipv6 is set but clusterCidrs.ipv6 is not/],
      [{ ...SPEC, podSubnets: { ipv4: '10.245.1.0/24', ipv6: P6 } }, /podSubnets.ipv4 10.245.1.0\/24 is not inside clusterCidrs.ipv4 10.244.0.0\/16/],
      [{ ...SPEC, podSubnets: { ipv4: P4 } }, /ipMasq needs this node's IPv6 pod subnet \(podSubnets.ipv6\)/],
      [{ ...SPEC, clusterCidrs: {} , podSubnets: {} }, /clusterCidrs has neither ipv4 nor ipv6/],
    ];
    for (const [spec, message] of bad) {
      await assert.rejects(cr.ensure(spec), (e: unknown) => e instanceof FirewallError && message.test(e.message));
      await assert.rejects(cr.check(spec), message);
    }
    assert.throws(() => openClusterRules('ipfw' as 'iptables', h.netns), /unknown firewall backend "ipfw"/);
    assert.deepEqual(await allIptables(h), before);
  });

  it('host bits are cleared, as iptables clears them', async () => {
    assert.deepEqual(await cr.ensure({ ...SPEC, clusterCidrs: { ipv4: '10.244.7.7/16', ipv6: 'fd10::1/56' }, podSubnets: { ipv4: '10.244.1.9/24', ipv6: 'fd10:0:0:1::9/64' } }), []);
  });

  it('remove takes out only the cluster chains and their jumps, in every variant and family', async () => {
    const other = await hosts.host('cripremove');
    // Docker-like rules of someone else's, in both variants (legacy with FORWARD policy DROP).
    for (const [v, f] of [['nft', 4], ['nft', 6], ['legacy', 4], ['legacy', 6]] as const) {
      await ipt(other, v, f, ['-N', 'DOCKER-USER']);
      await ipt(other, v, f, ['-A', 'DOCKER-USER', '-j', 'RETURN']);
      await ipt(other, v, f, ['-A', 'FORWARD', '-j', 'DOCKER-USER']);
      await ipt(other, v, f, ['-t', 'nat', '-N', 'DOCKER']);
      await ipt(other, v, f, ['-t', 'nat', '-A', 'POSTROUTING', '-s', f === 4 ? '172.17.0.0/16' : 'fd17::/64', '!', '-o', 'docker0', '-j', 'MASQUERADE']);
    }
    await ipt(other, 'legacy', 4, ['-P', 'FORWARD', 'DROP']);
    const before = await allIptables(other);
    const rules = openClusterRules('iptables', other.netns);
    const corrections = await rules.ensure(SPEC);
    assert.ok(corrections.some((c) => c.firewall === 'iptables-legacy' && c.object === 'filter FLANNEL-FWD' && c.drop === 'FORWARD has policy DROP'), kinds(corrections).join('\n'));
    assert.deepEqual(await tableLines(other, 4, 'nft', 'filter'), [...filterBuiltin(), ':DOCKER-USER -', ':FLANNEL-FWD -', '-A FORWARD -j DOCKER-USER', ...flannelFwd(C4).slice(0, 1), '-A DOCKER-USER -j RETURN', ...flannelFwd(C4).slice(1)]);
    await rules.remove();
    assert.deepEqual(await allIptables(other), before);
    await rules.remove();
    assert.deepEqual(await allIptables(other), before, 'remove twice: nothing more');
  });
});

describe('cluster rules: where the FORWARD accept goes', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('before the first DROP/REJECT rule that may see cluster traffic; appended (as flanneld does) after one that cannot', async () => {
    const h = await hosts.host('crplace');
    await ipt(h, 'nft', 4, ['-A', 'FORWARD', '-s', '192.0.2.0/24', '-d', '198.51.100.0/24', '-j', 'DROP']);
    await ipt(h, 'nft', 4, ['-N', 'DOCKER-USER']);
    await ipt(h, 'nft', 4, ['-A', 'FORWARD', '-j', 'DOCKER-USER']);
    await ipt(h, 'nft', 4, ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP']);
    await ipt(h, 'nft', 4, ['-A', 'FORWARD', '-j', 'REJECT', '--reject-with', 'icmp-host-prohibited']); // firewalld's last rule
    const cr = openClusterRules('iptables', h.netns);
    const spec: ClusterRulesSpec = { clusterCidrs: { ipv4: C4 }, podSubnets: {}, ipMasq: false };
    await cr.ensure(spec);
    const forward = async () => (await tableLines(h, 4, 'nft', 'filter')).filter((l) => l.startsWith('-A FORWARD'));
    const expected = [
      '-A FORWARD -s 192.0.2.0/24 -d 198.51.100.0/24 -j DROP',
      '-A FORWARD -j DOCKER-USER',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FORWARD -m conntrack --ctstate INVALID -j DROP',
      '-A FORWARD -j REJECT --reject-with icmp-host-prohibited',
    ];
    assert.deepEqual(await forward(), expected);
    assert.deepEqual(await cr.ensure(spec), []);
    // Someone moves it to the end (behind the REJECT): put back in place.
    await ipt(h, 'nft', 4, ['-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    await ipt(h, 'nft', 4, ['-A', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    const corrections = await cr.ensure(spec);
    assert.deepEqual(kinds(corrections), ['misordered iptables-nft 4 filter FORWARD']);
    assert.equal(corrections[0].problem, 'IPv4 iptables-nft: filter: the jump from FORWARD to FLANNEL-FWD comes after "-A FORWARD -m conntrack --ctstate INVALID -j DROP", which drops its traffic first');
    assert.deepEqual(await forward(), expected);
  });

  it('iptables backend on a legacy node: rules in legacy; iptables-nft gets the accept rules too when its FORWARD drops', async () => {
    const h = await hosts.host('crlegacy');
    for (let i = 1; i <= 3; i++) await ipt(h, 'legacy', 4, ['-A', 'INPUT', '-s', `192.0.2.${i}`, '-j', 'ACCEPT']);
    const cr = openClusterRules('iptables', h.netns);
    assert.deepEqual(kinds(await cr.ensure(SPEC)).filter((k) => !k.includes('legacy')), [], 'nothing in iptables-nft while its FORWARD accepts');
    assert.deepEqual(await tableLines(h, 4, 'legacy', 'nat'), natOf(4));
    assert.deepEqual(await tableLines(h, 6, 'legacy', 'filter'), filterOf(6));
    await ipt(h, 'nft', 6, ['-P', 'FORWARD', 'DROP']);
    const corrections = await cr.ensure(SPEC);
    assert.deepEqual(kinds(corrections), ['missing iptables-nft 6 filter FORWARD', 'missing iptables-nft 6 filter FLANNEL-FWD']);
    assert.ok(corrections.every((c) => c.drop === 'FORWARD has policy DROP'));
    assert.match(corrections[1].problem, /^IPv6 ip6tables-nft: filter: chain FLANNEL-FWD is missing \(accept rules needed here: FORWARD has policy DROP, and an nftables accept or another iptables' ACCEPT does not override a DROP\)$/);
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterOf(6, 'DROP'));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'nat'), [], 'masquerade only where the rules live');
    assert.deepEqual(await cr.ensure(SPEC), []);
    // The DROP goes away: the extra accept rules go too.
    await ipt(h, 'nft', 6, ['-P', 'FORWARD', 'ACCEPT']);
    assert.deepEqual(kinds(await cr.ensure(SPEC)), ['stale iptables-nft 6 filter FLANNEL-FWD']);
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), filterBuiltin());
  });
});

describe('cluster rules, nftables backend', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let cr: ClusterRules;
  const table4 = () => nftTableLines(h, 'ip', 'flannel-ipv4');
  const table6 = () => nftTableLines(h, 'ip6', 'flannel-ipv6');
  const handle = async (chain: string, text: string) => {
    const listing = await h.exec('nft', ['-a', 'list', 'chain', 'ip', 'flannel-ipv4', chain]);
    const m = new RegExp(`${text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} # handle (\\d+)`).exec(listing);
    assert.ok(m, listing);
    return m[1];
  };
  before(async () => {
    h = await hosts.host('crnft');
    cr = openClusterRules('nftables', h.netns);
  });
  after(() => hosts.cleanup());

  it("ensure writes flanneld's tables, chains, hooks, priorities and comments, IPv4 and IPv6", async () => {
    const corrections = await cr.ensure(SPEC);
    assert.deepEqual(kinds(corrections), ['missing nftables 4 table ip flannel-ipv4', 'missing nftables 6 table ip6 flannel-ipv6']);
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
    assert.deepEqual(await table6(), nftTable(6, C6, P6));
    assert.equal((await h.exec('nft', ['list', 'tables'])).trim(), 'table ip flannel-ipv4\ntable ip6 flannel-ipv6', 'no iptables tables created');
  });

  it('ensure twice changes nothing (not even a handle) and returns no corrections', async () => {
    const before = await h.exec('nft', ['-a', 'list', 'ruleset']);
    assert.deepEqual(await cr.ensure(SPEC), []);
    assert.deepEqual(await cr.check(SPEC), []);
    assert.equal(await h.exec('nft', ['-a', 'list', 'ruleset']), before);
  });

  it('a flushed chain, a deleted rule, reordered rules, a foreign rule, another hook: ensure restores the table and says what it found', async () => {
    await h.exec('nft', ['flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    await h.exec('nft', ['delete', 'rule', 'ip6', 'flannel-ipv6', 'forward', 'handle', /ip6 daddr fd10::\/56 accept # handle (\d+)/.exec(await h.exec('nft', ['-a', 'list', 'table', 'ip6', 'flannel-ipv6']))![1]]);
    assert.deepEqual(await cr.check(SPEC), [
      'IPv4 nftables: table ip flannel-ipv4: chain postrtg lacks "meta mark & 0x4000 == 0x4000 return", "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return", "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return", "ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return", "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random", "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random"',
      'IPv6 nftables: table ip6 flannel-ipv6: chain forward lacks "ip6 daddr fd10::/56 accept"',
    ]);
    assert.deepEqual(kinds(await repaired(cr)), ['missing nftables 4 chain ip flannel-ipv4 postrtg', 'missing nftables 6 chain ip6 flannel-ipv6 forward']);
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
    assert.deepEqual(await table6(), nftTable(6, C6, P6));

    // Reordered: the first rule moved to the end.
    await h.exec('nft', ['delete', 'rule', 'ip', 'flannel-ipv4', 'forward', 'handle', await handle('forward', 'ip saddr 10.244.0.0/16 accept')]);
    await h.exec('nft', ['add', 'rule', 'ip', 'flannel-ipv4', 'forward', 'ip', 'saddr', C4, 'accept']);
    // A rule of someone else's, and a chain with another priority.
    await h.exec('nft', ['insert', 'rule', 'ip', 'flannel-ipv4', 'postrtg', 'ip', 'saddr', '10.244.1.7', 'return']);
    await h.exec('nft', ['flush chain ip6 flannel-ipv6 postrtg; delete chain ip6 flannel-ipv6 postrtg; add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat + 10 ; }']);
    const corrections = await repaired(cr);
    assert.deepEqual(kinds(corrections), [
      'misordered nftables 4 chain ip flannel-ipv4 forward',
      'changed nftables 4 chain ip flannel-ipv4 postrtg',
      'changed nftables 6 chain ip6 flannel-ipv6 postrtg',
      'missing nftables 6 chain ip6 flannel-ipv6 postrtg',
    ]);
    assert.equal(corrections[2].problem, 'IPv6 nftables: table ip6 flannel-ipv6: chain postrtg is type nat hook postrouting priority 110 policy accept, not type nat hook postrouting priority srcnat policy accept');
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
    assert.deepEqual(await table6(), nftTable(6, C6, P6));
  });

  it('`nft flush ruleset` (Debian\'s nftables.service): ensure puts both tables back', async () => {
    await h.exec('nft', ['flush', 'ruleset']);
    assert.deepEqual(kinds(await repaired(cr)), ['missing nftables 4 table ip flannel-ipv4', 'missing nftables 6 table ip6 flannel-ipv6']);
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
    assert.deepEqual(await table6(), nftTable(6, C6, P6));
  });

  it('ipMasq false: no postrtg chain; turning it off removes it; an IPv4-only spec removes the IPv6 table', async () => {
    assert.deepEqual(kinds(await cr.ensure(NO_MASQ)), ['stale nftables 4 chain ip flannel-ipv4 postrtg', 'stale nftables 6 chain ip6 flannel-ipv6 postrtg']);
    assert.deepEqual(await table4(), nftTable(4, C4, null));
    assert.deepEqual(await table6(), nftTable(6, C6, null));
    assert.deepEqual(await cr.ensure(NO_MASQ), []);
    assert.deepEqual(kinds(await cr.ensure({ clusterCidrs: { ipv4: C4 }, podSubnets: {}, ipMasq: false })), ['stale nftables 6 table ip6 flannel-ipv6']);
    assert.deepEqual(await table6(), []);
    assert.deepEqual(kinds(await cr.ensure({ ...SPEC, randomFully: false })), ['missing nftables 4 chain ip flannel-ipv4 postrtg', 'missing nftables 6 table ip6 flannel-ipv6']);
    assert.deepEqual(await table4(), nftTable(4, C4, P4, false));
    assert.deepEqual(kinds(await cr.ensure(SPEC)), ['changed nftables 4 chain ip flannel-ipv4 postrtg', 'changed nftables 6 chain ip6 flannel-ipv6 postrtg']);
    await repaired(cr);
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
  });

  it('forwardRules false: no forward chain (the masquerade stays); with ipMasq off too, no table at all', async () => {
    await repaired(cr);
    const off = await cr.ensure({ ...SPEC, forwardRules: false });
    assert.deepEqual(kinds(off), ['stale nftables 4 chain ip flannel-ipv4 forward', 'stale nftables 6 chain ip6 flannel-ipv6 forward']);
    assert.match(off[0]!.problem, /forward rules are off/);
    assert.ok(!(await table4()).some((l) => /chain forward/.test(l)), (await table4()).join('\n'));
    assert.ok((await table4()).some((l) => /chain postrtg/.test(l)));
    assert.deepEqual(await cr.ensure({ ...SPEC, forwardRules: false }), []);
    const none = await cr.ensure({ ...NO_MASQ, forwardRules: false });
    assert.deepEqual(kinds(none), ['stale nftables 4 table ip flannel-ipv4', 'stale nftables 6 table ip6 flannel-ipv6']);
    assert.deepEqual(await table4(), []);
    await repaired(cr);
    assert.deepEqual(await table4(), nftTable(4, C4, P4));
  });

  it('switching backends: each removes what the other wrote (as flanneld cleans up the backend it does not use)', async () => {
    const ipt = openClusterRules('iptables', h.netns);
    const switched = await ipt.ensure(SPEC);
    assert.deepEqual(kinds(switched).slice(-2), ['stale nftables 4 table ip flannel-ipv4', 'stale nftables 6 table ip6 flannel-ipv6']);
    assert.equal(switched.at(-1)!.problem, 'IPv6 nftables: table ip6 flannel-ipv6 is not wanted here (the iptables backend is in use)');
    assert.deepEqual(await table4(), []);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), natOf(4));
    const back = await cr.ensure(SPEC);
    assert.equal(back[2].problem, 'IPv4 iptables-nft: nat: chain FLANNEL-POSTRTG is not wanted here (the nftables backend is in use)');
    assert.deepEqual(kinds(back), [
      'missing nftables 4 table ip flannel-ipv4',
      'missing nftables 6 table ip6 flannel-ipv6',
      'stale iptables-nft 4 nat FLANNEL-POSTRTG',
      'stale iptables-nft 4 filter FLANNEL-FWD',
      'stale iptables-nft 6 nat FLANNEL-POSTRTG',
      'stale iptables-nft 6 filter FLANNEL-FWD',
    ]);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'nat'), NAT_BUILTIN);
    assert.deepEqual(await tableLines(h, 4, 'nft', 'filter'), filterBuiltin());
  });

  it("remove deletes only flannel's tables and chains: others' tables and iptables rules stay", async () => {
    const other = await hosts.host('crnftremove');
    await other.exec('nft', ['add table inet twother; add chain inet twother forward { type filter hook forward priority 0 ; }; add rule inet twother forward ip saddr 10.244.0.0/16 counter accept']);
    await ipt(other, 'nft', 4, ['-N', 'DOCKER']);
    await ipt(other, 'nft', 4, ['-A', 'FORWARD', '-o', 'docker0', '-j', 'DOCKER']);
    await ipt(other, 'nft', 4, ['-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE']);
    const before = await nftRuleset(other);
    const rules = openClusterRules('nftables', other.netns);
    await rules.ensure(SPEC);
    assert.notDeepEqual(await nftRuleset(other), before);
    await rules.remove();
    assert.deepEqual(await nftRuleset(other), before);
  });
});

describe('cluster rules, nftables backend: accept rules where an iptables FORWARD drops', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('a DROP policy in iptables-legacy, a REJECT rule in iptables-nft: FLANNEL-FWD goes into each, the Corrections say why', async () => {
    const h = await hosts.host('crnftdrop');
    await ipt(h, 'legacy', 4, ['-P', 'FORWARD', 'DROP']);
    await ipt(h, 'nft', 6, ['-A', 'FORWARD', '-j', 'REJECT']);
    const cr = openClusterRules('nftables', h.netns);
    const problems = await cr.check(SPEC);
    assert.ok(problems.includes("IPv4 iptables-legacy: filter: chain FLANNEL-FWD is missing (accept rules needed here: FORWARD has policy DROP, and an nftables accept or another iptables' ACCEPT does not override a DROP)"), problems.join('\n'));
    const corrections = await cr.ensure(SPEC);
    assert.deepEqual(kinds(corrections), [
      'missing nftables 4 table ip flannel-ipv4',
      'missing nftables 6 table ip6 flannel-ipv6',
      'missing iptables-nft 6 filter FORWARD',
      'missing iptables-nft 6 filter FLANNEL-FWD',
      'missing iptables-legacy 4 filter FORWARD',
      'missing iptables-legacy 4 filter FLANNEL-FWD',
    ]);
    assert.deepEqual(corrections.map((c) => c.drop ?? null), [null, null, 'FORWARD has the rule "-A FORWARD -j REJECT --reject-with icmp6-port-unreachable"', 'FORWARD has the rule "-A FORWARD -j REJECT --reject-with icmp6-port-unreachable"', 'FORWARD has policy DROP', 'FORWARD has policy DROP']);
    assert.deepEqual(await tableLines(h, 4, 'legacy', 'filter'), filterOf(4, 'DROP'));
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), [...filterBuiltin(), ':FLANNEL-FWD -', ...flannelFwd(C6).slice(0, 1), '-A FORWARD -j REJECT --reject-with icmp6-port-unreachable', ...flannelFwd(C6).slice(1)]);
    assert.deepEqual(await tableLines(h, 4, 'legacy', 'nat'), [], 'no masquerade in iptables');
    assert.deepEqual(await tableLines(h, 6, 'legacy', 'filter'), [], 'nothing where nothing drops');
    assert.deepEqual(await cr.ensure(SPEC), []);
    // Someone removes it: back, and said why.
    await ipt(h, 'legacy', 4, ['-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    const again = await cr.ensure(SPEC);
    assert.deepEqual(kinds(again), ['missing iptables-legacy 4 filter FORWARD']);
    assert.equal(again[0].drop, 'FORWARD has policy DROP');
    await cr.remove();
    assert.deepEqual(await tableLines(h, 4, 'legacy', 'filter'), filterBuiltin('DROP'), "the DROP policy is someone else's: it stays");
    assert.deepEqual(await tableLines(h, 6, 'nft', 'filter'), [...filterBuiltin(), '-A FORWARD -j REJECT --reject-with icmp6-port-unreachable']);
    assert.equal((await h.exec('nft', ['list', 'tables'])).includes('flannel'), false);
  });

  it('check names a native nftables forward chain with policy drop, which no accept of ours can get past', async () => {
    const h = await hosts.host('crnftnative');
    await h.exec('nft', ['add table inet fw; add chain inet fw forward { type filter hook forward priority 0 ; policy drop ; }']);
    const cr = openClusterRules('nftables', h.netns);
    await cr.ensure(SPEC);
    assert.deepEqual(await cr.check(SPEC), [
      'IPv4 nftables: chain inet fw forward (hook forward, policy drop) drops forwarded traffic, and neither twill\'s nftables accept nor an iptables ACCEPT overrides it: it needs its own accept rules for 10.244.0.0/16',
      'IPv6 nftables: chain inet fw forward (hook forward, policy drop) drops forwarded traffic, and neither twill\'s nftables accept nor an iptables ACCEPT overrides it: it needs its own accept rules for fd10::/56',
    ]);
  });
});
