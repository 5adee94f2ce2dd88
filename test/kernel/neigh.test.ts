import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { bridgeJson, ipJson } from '../support/exec.js';

interface IpNeigh { dst: string; dev: string; lladdr?: string; state: string[] }
interface Fdb { mac: string; ifname: string; dst?: string; flags: string[]; state?: string }

describe('neighbours and FDB', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('a');
    await h.handle.addLink({ kind: 'bridge', name: 'under0', up: true });
    await h.handle.addAddr('under0', '198.18.0.1/24');
    await h.handle.addLink({ kind: 'vxlan', name: 'flannel.1', vni: 1, local: '198.18.0.1', device: 'under0', up: true });
  });
  after(() => hosts.cleanup());

  const neighs = () => ipJson<IpNeigh[]>(h.name, ['neigh', 'show', 'dev', 'flannel.1', 'nud', 'permanent']);
  const fdb = () => bridgeJson<Fdb[]>(h.name, ['fdb', 'show', 'dev', 'flannel.1']);

  it('adds permanent IPv4 and IPv6 neighbours (remote subnet .0 → VtepMAC)', async () => {
    await h.handle.addNeigh('flannel.1', '10.244.2.0', '0a:58:0a:f4:02:00');
    await h.handle.addNeigh('flannel.1', 'fd10:244:2::', '0a:58:0a:f4:02:01');
    const got = await neighs();
    assert.deepEqual(
      got.map((n) => [n.dst, n.lladdr, n.state.includes('PERMANENT')]).sort(),
      [['10.244.2.0', '0a:58:0a:f4:02:00', true], ['fd10:244:2::', '0a:58:0a:f4:02:01', true]],
    );
    const mine = (await h.handle.listNeighs({ link: 'flannel.1' })).filter((n) => n.permanent);
    assert.deepEqual(mine.map((n) => [n.ip, n.mac, n.family]).sort(), [['10.244.2.0', '0a:58:0a:f4:02:00', 4], ['fd10:244:2::', '0a:58:0a:f4:02:01', 6]]);
  });

  it('replaces a neighbour (a peer came back with a new VtepMAC)', async () => {
    await h.handle.replaceNeigh('flannel.1', '10.244.2.0', '0a:58:0a:f4:02:99');
    const n = (await neighs()).find((x) => x.dst === '10.244.2.0');
    assert.equal(n?.lladdr, '0a:58:0a:f4:02:99');
  });

  it('deletes neighbours', async () => {
    await h.handle.deleteNeigh('flannel.1', '10.244.2.0');
    await h.handle.deleteNeigh('flannel.1', 'fd10:244:2::');
    assert.deepEqual(await neighs(), []);
  });

  it('appends FDB entries (VtepMAC → remote public IP) on the vxlan device', async () => {
    await h.handle.appendFdb('flannel.1', '0a:58:0a:f4:02:00', '198.18.0.2');
    await h.handle.appendFdb('flannel.1', '0a:58:0a:f4:03:00', '198.18.0.3');
    const got = (await fdb()).filter((e) => e.dst);
    assert.deepEqual(got.map((e) => [e.mac, e.dst, e.state]).sort(), [['0a:58:0a:f4:02:00', '198.18.0.2', 'permanent'], ['0a:58:0a:f4:03:00', '198.18.0.3', 'permanent']]);
    assert.ok(got.every((e) => e.flags.includes('self')));
    const mine = (await h.handle.listFdb({ link: 'flannel.1' })).filter((e) => e.dst);
    assert.deepEqual(mine.map((e) => [e.mac, e.dst, e.self, e.permanent]).sort(), [['0a:58:0a:f4:02:00', '198.18.0.2', true, true], ['0a:58:0a:f4:03:00', '198.18.0.3', true, true]]);
  });

  it('replaces an FDB entry (the peer\'s public IP moved) and deletes one', async () => {
    await h.handle.replaceFdb('flannel.1', '0a:58:0a:f4:02:00', '198.18.0.12');
    assert.deepEqual((await fdb()).filter((e) => e.mac === '0a:58:0a:f4:02:00').map((e) => e.dst), ['198.18.0.12']);
    await h.handle.deleteFdb('flannel.1', '0a:58:0a:f4:02:00', '198.18.0.12');
    await h.handle.deleteFdb('flannel.1', '0a:58:0a:f4:03:00');
    assert.deepEqual((await fdb()).filter((e) => e.dst), []);
  });

  describe('errors', () => {
    const rejects = (p: Promise<unknown>, kind: string, text: RegExp) =>
      assert.rejects(p, (e: unknown) => e instanceof KernelError && e.kind === kind && text.test(e.message));
    it('a neighbour that exists', async () => {
      await h.handle.addNeigh('flannel.1', '10.244.5.0', '0a:58:0a:f4:05:00');
      await rejects(h.handle.addNeigh('flannel.1', '10.244.5.0', '0a:58:0a:f4:05:00'), 'exists', /add neighbour 10\.244\.5\.0 lladdr 0a:58:0a:f4:05:00 on link "flannel\.1".*EEXIST/);
      await h.handle.deleteNeigh('flannel.1', '10.244.5.0');
    });
    it('deleting a neighbour that is gone', () => rejects(h.handle.deleteNeigh('flannel.1', '10.244.6.0'), 'not-found', /delete neighbour 10\.244\.6\.0/));
    it('deleting an FDB entry that is gone', () => rejects(h.handle.deleteFdb('flannel.1', '0a:58:0a:f4:06:00', '198.18.0.6'), 'not-found', /delete FDB entry 0a:58:0a:f4:06:00 dst 198\.18\.0\.6/));
    it('a bad MAC', () => rejects(h.handle.addNeigh('flannel.1', '10.244.7.0', '0a:58'), 'invalid', /"0a:58" is not a MAC address/));
    it('a bad IP', () => rejects(h.handle.appendFdb('flannel.1', '0a:58:0a:f4:07:00', '198.18.0'), 'invalid', /"198\.18\.0" is not an IP address/));
    it('nothing was left behind', async () => {
      assert.deepEqual(await neighs(), []);
      assert.deepEqual((await fdb()).filter((e) => e.dst), []);
    });
  });
});
