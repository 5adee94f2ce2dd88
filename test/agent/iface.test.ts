// How the agent picks its interface and public IP, as flanneld does: --iface by
// name or address (the first that exists), --iface-regex (addresses first, then
// names), --iface-can-reach (the route's device), else the default route's.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { chooseInterface, InterfaceError, type InterfaceChoice } from '../../src/agent/iface.js';

const none: InterfaceChoice = { ifaces: [], ifaceRegexes: [], ifaceCanReach: null, publicIp: null, publicIpv6: null, ipv4: true, ipv6: false };

describe('agent: choosing the interface and the public IP', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('if');
    // Bridges stand in for NICs: links with addresses and routes, nothing more is needed.
    for (const [name, cidr] of [['enp1s0', '192.0.2.10/24'], ['enp2s0', '198.51.100.10/24'], ['wg0', '203.0.113.10/24']] as const) {
      await h.handle.addLink({ kind: 'bridge', name, up: true });
      await h.handle.addAddr(name, cidr);
    }
    await h.handle.addAddr('enp2s0', 'fd51::10/64', { noDad: true });
    await h.handle.addRoute({ dst: 'default', gateway: '198.51.100.1' });
    await h.handle.addRoute({ dst: '10.99.0.0/16', gateway: '203.0.113.1' });
  });
  after(() => hosts.cleanup());

  it('no choice: the default route\'s interface and its address', async () => {
    const e = await chooseInterface(h.handle, none);
    assert.deepEqual([e.link.name, e.publicIp, e.how], ['enp2s0', '198.51.100.10', 'the default route']);
  });

  it('--iface: by name or by address, the first that exists wins', async () => {
    assert.equal((await chooseInterface(h.handle, { ...none, ifaces: ['eth9', 'enp1s0'] })).link.name, 'enp1s0');
    const byIp = await chooseInterface(h.handle, { ...none, ifaces: ['203.0.113.10'] });
    assert.deepEqual([byIp.link.name, byIp.publicIp], ['wg0', '203.0.113.10']);
    await assert.rejects(chooseInterface(h.handle, { ...none, ifaces: ['eth9'] }), (e: unknown) => e instanceof InterfaceError && /none of --iface eth9 .*interfaces: .*enp1s0/.test(e.message));
  });

  it('--iface-regex: addresses first, then names', async () => {
    assert.equal((await chooseInterface(h.handle, { ...none, ifaceRegexes: ['^198\\.51\\.'] })).link.name, 'enp2s0');
    assert.equal((await chooseInterface(h.handle, { ...none, ifaceRegexes: ['^wg'] })).link.name, 'wg0');
    await assert.rejects(chooseInterface(h.handle, { ...none, ifaceRegexes: ['('] }), /is not a regular expression/);
  });

  it('--iface-can-reach: the device of the route to that address', async () => {
    assert.equal((await chooseInterface(h.handle, { ...none, ifaceCanReach: '10.99.1.1' })).link.name, 'wg0');
    assert.equal((await chooseInterface(h.handle, { ...none, ifaceCanReach: '192.0.2.77' })).link.name, 'enp1s0');
  });

  it('--public-ip overrides the address other nodes use; dual stack needs an IPv6 address too', async () => {
    const e = await chooseInterface(h.handle, { ...none, publicIp: '100.64.0.1' });
    assert.deepEqual([e.link.name, e.publicIp, e.ifaceIp], ['enp2s0', '100.64.0.1', '198.51.100.10']);
    const dual = await chooseInterface(h.handle, { ...none, ipv6: true });
    assert.equal(dual.publicIpv6, 'fd51::10');
    await assert.rejects(chooseInterface(h.handle, { ...none, ifaces: ['enp1s0'], ipv6: true }), /enp1s0 \(chosen by --iface enp1s0\) has no global IPv6 address: give --public-ipv6/);
  });
});
