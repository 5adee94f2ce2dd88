import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FirewallError, chooseBackend, detectIptablesVariant, supportsIptables, supportsNftables } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

/** `count` rules in the filter table of one iptables variant (the way a host firewall would have them). */
async function addRules(h: TestHost, variant: 'legacy' | 'nft', count: number): Promise<void> {
  for (let i = 0; i < count; i++) await h.exec(`iptables-${variant}`, ['-w', '-t', 'filter', '-A', 'INPUT', '-s', `192.0.2.${i + 1}`, '-j', 'ACCEPT']);
}

describe('iptables variant detection (as iptables-wrappers / kube-proxy images do it)', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('a namespace without rules: nft', async () => {
    const h = await hosts.host('dempty');
    assert.equal(await detectIptablesVariant(h.netns), 'nft');
  });

  it('rules made with iptables-legacy: legacy', async () => {
    const h = await hosts.host('dlegacy');
    await addRules(h, 'legacy', 1);
    assert.equal(await detectIptablesVariant(h.netns), 'legacy');
  });

  it('rules made with iptables-nft: nft', async () => {
    const h = await hosts.host('dnft');
    await addRules(h, 'nft', 1);
    assert.equal(await detectIptablesVariant(h.netns), 'nft');
  });

  it('both: the one with more rules, nft when even; IPv6 rules count too', async () => {
    const h = await hosts.host('dboth');
    await addRules(h, 'legacy', 2);
    await addRules(h, 'nft', 2);
    assert.equal(await detectIptablesVariant(h.netns), 'nft', 'even');
    await h.exec('ip6tables-legacy', ['-w', '-t', 'filter', '-A', 'INPUT', '-s', '2001:db8::1', '-j', 'ACCEPT']);
    assert.equal(await detectIptablesVariant(h.netns), 'legacy');
  });

  it("kubelet's hint chain decides before any count", async () => {
    const h = await hosts.host('dhint');
    await addRules(h, 'nft', 3);
    await h.exec('iptables-legacy', ['-w', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    assert.equal(await detectIptablesVariant(h.netns), 'legacy', 'hint in legacy beats more nft rules');
    await h.exec('ip6tables-nft', ['-w', '-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY']);
    assert.equal(await detectIptablesVariant(h.netns), 'nft', 'a hint in nft is looked at first');
  });

  it('detection changes nothing: no legacy table appears', async () => {
    const h = await hosts.host('dread');
    await detectIptablesVariant(h.netns);
    assert.equal((await h.exec('iptables-legacy-save', [])).trim(), '');
    assert.equal((await h.exec('nft', ['list', 'ruleset'])).trim(), '');
  });
});

describe('choosing the ipMasq backend (as the reference bridge plugin does)', () => {
  const hosts = new TestHosts();
  after(() => hosts.cleanup());

  it('unset: iptables, where iptables works (it does here, and so does nftables)', async () => {
    const h = await hosts.host('cdefault');
    assert.equal(await supportsIptables(h.netns), true);
    assert.equal(await supportsNftables(h.netns), true);
    assert.equal(await chooseBackend(undefined, h.netns), 'iptables');
    assert.equal((await h.exec('nft', ['list', 'ruleset'])).trim(), '', 'probing created nothing');
  });

  it('"iptables" and "nftables" are taken as they are', async () => {
    const h = await hosts.host('cnamed');
    assert.equal(await chooseBackend('iptables', h.netns), 'iptables');
    assert.equal(await chooseBackend('nftables', h.netns), 'nftables');
  });

  for (const bad of ['nft', 'IPTABLES', '']) {
    it(`${JSON.stringify(bad)} is an error naming the key and the allowed values`, async () => {
      await assert.rejects(
        chooseBackend(bad, null),
        (e: unknown) => e instanceof FirewallError && e.message.includes('ipMasqBackend') && e.message.includes(JSON.stringify(bad)) && e.message.includes('"iptables"') && e.message.includes('"nftables"'),
      );
    });
  }
});
