import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson } from '../support/exec.js';

interface IpAddrInfo { family: string; local: string; prefixlen: number; scope: string }
const ipAddrs = async (h: TestHost, dev: string): Promise<string[]> => {
  const [entry] = await ipJson<{ addr_info: IpAddrInfo[] }[]>(h.name, ['addr', 'show', 'dev', dev]);
  return entry!.addr_info.filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`).sort();
};

describe('addresses', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('a');
    await h.handle.addLink({ kind: 'bridge', name: 'cni0', up: true });
  });
  after(() => hosts.cleanup());

  it('adds IPv4 and IPv6 addresses and lists them as ip does', async () => {
    await h.handle.addAddr('cni0', '10.244.1.1/24');
    await h.handle.addAddr('cni0', 'fd10:244:1::1/64', { noDad: true });
    assert.deepEqual(await ipAddrs(h, 'cni0'), ['10.244.1.1/24', 'fd10:244:1::1/64']);
    const listed = (await h.handle.listAddrs({ link: 'cni0' })).filter((a) => a.scope === 0);
    assert.deepEqual(listed.map((a) => `${a.address}/${a.prefixLen}`).sort(), ['10.244.1.1/24', 'fd10:244:1::1/64']);
    const v4 = await h.handle.listAddrs({ link: 'cni0', family: 4 });
    assert.deepEqual(v4.map((a) => a.address), ['10.244.1.1']);
    assert.equal(v4[0]!.family, 4);
    assert.equal(v4[0]!.ifindex, (await h.handle.getLink('cni0')).ifindex);
  });

  it('adds a second address to the same link (flannel.1 keeps .0/32, cni0 can hold several)', async () => {
    await h.handle.addAddr('cni0', '10.244.9.1/24');
    assert.deepEqual(await ipAddrs(h, 'cni0'), ['10.244.1.1/24', '10.244.9.1/24', 'fd10:244:1::1/64']);
    await h.handle.deleteAddr('cni0', '10.244.9.1/24');
  });

  it('replaces an address in place (same address, new prefix is a new address; same is a no-op)', async () => {
    await h.handle.replaceAddr('cni0', '10.244.1.1/24');
    await h.handle.replaceAddr('cni0', '10.244.2.1/24');
    assert.deepEqual(await ipAddrs(h, 'cni0'), ['10.244.1.1/24', '10.244.2.1/24', 'fd10:244:1::1/64']);
    await h.handle.deleteAddr('cni0', '10.244.2.1/24');
  });

  it('deletes IPv4 and IPv6 addresses', async () => {
    await h.handle.deleteAddr('cni0', '10.244.1.1/24');
    await h.handle.deleteAddr('cni0', 'fd10:244:1::1/64');
    assert.deepEqual(await ipAddrs(h, 'cni0'), []);
  });

  describe('errors', () => {
    const rejects = (p: Promise<unknown>, kind: string, text: RegExp) =>
      assert.rejects(p, (e: unknown) => e instanceof KernelError && e.kind === kind && text.test(e.message));
    it('a duplicate address', async () => {
      await h.handle.addAddr('cni0', '10.244.3.1/24');
      await rejects(h.handle.addAddr('cni0', '10.244.3.1/24'), 'exists', /add address 10\.244\.3\.1\/24 on link "cni0".*EEXIST/);
      await h.handle.deleteAddr('cni0', '10.244.3.1/24');
    });
    it('deleting an address that is not there', () => rejects(h.handle.deleteAddr('cni0', '10.244.4.1/24'), 'not-found', /delete address 10\.244\.4\.1\/24/));
    it('a CIDR without a prefix', () => rejects(h.handle.addAddr('cni0', '10.244.3.1'), 'invalid', /"10\.244\.3\.1" is not a CIDR/));
    it('a prefix too long', () => rejects(h.handle.addAddr('cni0', '10.244.3.1/33'), 'invalid', /invalid prefix length \(0 to 32\)/));
    it('an IPv6 prefix too long', () => rejects(h.handle.addAddr('cni0', 'fd00::1/129'), 'invalid', /0 to 128/));
    it('not an address', () => rejects(h.handle.addAddr('cni0', '10.244.300.1/24'), 'invalid', /"10\.244\.300\.1" is not an IP address/));
    it('a short IPv4 form is not accepted', () => rejects(h.handle.addAddr('cni0', '10.1/24'), 'invalid', /not an IP address/));
    it('a link that does not exist', () => rejects(h.handle.addAddr('nolink0', '10.0.0.1/24'), 'not-found', /nolink0/));
    it('nothing was left behind', async () => assert.deepEqual(await ipAddrs(h, 'cni0'), []));
  });
});
