import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson } from '../support/exec.js';

interface IpRoute { dst: string; gateway?: string; dev?: string; protocol?: string; scope?: string; metric?: number; flags: string[]; table?: string }
const TWILL_PROTO = 87;

describe('routes', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('a');
    await h.handle.addLink({ kind: 'veth', name: 'up0', up: true, peer: { name: 'up0p' } });
    await h.handle.setLinkUp('up0p');
    await h.handle.addAddr('up0', '198.18.0.1/24');
    await h.handle.addAddr('up0', 'fd18::1/64', { noDad: true });
    await h.handle.addLink({ kind: 'vxlan', name: 'flannel.1', vni: 1, local: '198.18.0.1', device: 'up0', up: true });
  });
  after(() => hosts.cleanup());

  const show = (args: string[]) => ipJson<IpRoute[]>(h.name, ['route', 'show', ...args]);

  it('adds a route via a gateway, and lists it as ip does', async () => {
    await h.handle.addRoute({ dst: '10.50.0.0/16', gateway: '198.18.0.254' });
    const [r] = await show(['10.50.0.0/16']);
    assert.equal(r?.gateway, '198.18.0.254');
    assert.equal(r?.dev, 'up0');
    const mine = (await h.handle.listRoutes({ family: 4 })).find((x) => x.dst === '10.50.0.0/16');
    assert.equal(mine?.gateway, '198.18.0.254');
    assert.equal(mine?.ifindex, (await h.handle.getLink('up0')).ifindex);
  });

  it('adds flannel\'s onlink route through the vxlan device, with twill\'s protocol number', async () => {
    await h.handle.addRoute({ dst: '10.244.2.0/24', gateway: '10.244.2.0', device: 'flannel.1', onlink: true, protocol: TWILL_PROTO });
    const [r] = await show(['10.244.2.0/24']);
    assert.equal(r?.gateway, '10.244.2.0');
    assert.equal(r?.dev, 'flannel.1');
    assert.ok(r?.flags.includes('onlink'));
    assert.equal(r?.protocol, String(TWILL_PROTO));
    const own = await h.handle.listRoutes({ protocol: TWILL_PROTO });
    assert.deepEqual(own.map((x) => [x.dst, x.gateway, x.onlink]), [['10.244.2.0/24', '10.244.2.0', true]]);
  });

  it('adds a device route with link scope, a metric, and a route in another table', async () => {
    await h.handle.addRoute({ dst: '10.60.0.0/24', device: 'up0', metric: 50 });
    const [r] = await show(['10.60.0.0/24']);
    assert.equal(r?.scope, 'link');
    assert.equal(r?.metric, 50);
    await h.handle.addRoute({ dst: '10.61.0.0/24', device: 'up0', table: 1234 });
    const t = await ipJson<IpRoute[]>(h.name, ['route', 'show', 'table', '1234']);
    assert.deepEqual(t.map((x) => x.dst), ['10.61.0.0/24']);
    assert.deepEqual((await h.handle.listRoutes({ table: 1234 })).map((x) => x.dst), ['10.61.0.0/24']);
    assert.equal((await h.handle.listRoutes()).some((x) => x.dst === '10.61.0.0/24'), false, 'main table by default');
    await h.handle.deleteRoute({ dst: '10.61.0.0/24', table: 1234 });
  });

  it('adds IPv6 routes and a default route', async () => {
    await h.handle.addRoute({ dst: 'fd99::/64', gateway: 'fd18::fe' });
    await h.handle.addRoute({ dst: 'default', gateway: '198.18.0.254' });
    const [r6] = await ipJson<IpRoute[]>(h.name, ['-6', 'route', 'show', 'fd99::/64']);
    assert.equal(r6?.gateway, 'fd18::fe');
    const [def] = await show(['default']);
    assert.equal(def?.gateway, '198.18.0.254');
    const listed = await h.handle.listRoutes({ family: 6 });
    assert.ok(listed.some((x) => x.dst === 'fd99::/64' && x.gateway === 'fd18::fe' && x.family === 6));
    assert.ok((await h.handle.listRoutes({ family: 4 })).some((x) => x.dst === '0.0.0.0/0'));
    await h.handle.deleteRoute({ dst: 'default' });
    await h.handle.deleteRoute({ dst: 'fd99::/64' });
    assert.deepEqual(await show(['default']), []);
  });

  it('replaces a route (a new gateway), and filters by device', async () => {
    await h.handle.replaceRoute({ dst: '10.50.0.0/16', gateway: '198.18.0.253' });
    const [r] = await show(['10.50.0.0/16']);
    assert.equal(r?.gateway, '198.18.0.253');
    const viaFlannel = await h.handle.listRoutes({ device: 'flannel.1', family: 4 });
    assert.deepEqual(viaFlannel.map((x) => x.dst), ['10.244.2.0/24']);
  });

  it('deletes routes', async () => {
    await h.handle.deleteRoute({ dst: '10.50.0.0/16', gateway: '198.18.0.253' });
    await h.handle.deleteRoute({ dst: '10.244.2.0/24', device: 'flannel.1', protocol: TWILL_PROTO });
    await h.handle.deleteRoute({ dst: '10.60.0.0/24' });
    assert.deepEqual(await show(['10.50.0.0/16']), []);
    assert.deepEqual(await h.handle.listRoutes({ protocol: TWILL_PROTO }), []);
  });

  describe('errors', () => {
    const rejects = (p: Promise<unknown>, kind: string, text: RegExp) =>
      assert.rejects(p, (e: unknown) => e instanceof KernelError && e.kind === kind && text.test(e.message));
    it('a route that exists', async () => {
      await h.handle.addRoute({ dst: '10.70.0.0/24', device: 'up0' });
      await rejects(h.handle.addRoute({ dst: '10.70.0.0/24', device: 'up0' }), 'exists', /add route 10\.70\.0\.0\/24 dev up0.*EEXIST/);
      await h.handle.deleteRoute({ dst: '10.70.0.0/24' });
    });
    it('deleting a route that is gone', () => rejects(h.handle.deleteRoute({ dst: '10.71.0.0/24' }), 'not-found', /delete route 10\.71\.0\.0\/24.*ESRCH/));
    it('host bits in the destination', () => rejects(h.handle.addRoute({ dst: '10.72.0.1/24', device: 'up0' }), 'invalid', /host bits set/));
    it('a bad CIDR', () => rejects(h.handle.addRoute({ dst: '10.72.0.0/40', device: 'up0' }), 'invalid', /invalid prefix length/));
    it('neither gateway nor device', () => rejects(h.handle.addRoute({ dst: '10.72.0.0/24' }), 'invalid', /needs a gateway or a device/));
    it('a gateway of the other family', () => rejects(h.handle.addRoute({ dst: '10.72.0.0/24', gateway: 'fd18::1' }), 'invalid', /not of the destination's family/));
    // What `ip` reports as "Nexthop has invalid gateway": the reason flannel's route is onlink.
    it('a gateway not on the link, without onlink', () =>
      rejects(h.handle.addRoute({ dst: '10.73.0.0/24', gateway: '10.99.0.1', device: 'flannel.1' }), 'other', /add route 10\.73\.0\.0\/24 via 10\.99\.0\.1 dev flannel\.1.*ENETUNREACH/));
  });
});
