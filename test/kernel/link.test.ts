import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError, type Link } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson } from '../support/exec.js';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  master?: string;
  flags: string[];
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

const ipLink = async (h: TestHost, name: string): Promise<IpLink> => (await ipJson<IpLink[]>(h.name, ['-d', 'link', 'show', 'dev', name]))[0]!;

async function rejects(p: Promise<unknown>, kind: string, text: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KernelError, `expected a KernelError, got ${String(e)}`);
    assert.equal(e.kind, kind);
    assert.match(e.message, text);
    return true;
  });
}

describe('links', () => {
  const hosts = new TestHosts();
  let a: TestHost;
  let b: TestHost;
  before(async () => {
    a = await hosts.host('a');
    b = await hosts.host('b');
  });
  after(() => hosts.cleanup());

  it('creates a bridge, up, with MTU and MAC, and lists it as ip does', async () => {
    const br = await a.handle.addLink({ kind: 'bridge', name: 'cni0', up: true, mtu: 1450, mac: '02:42:ac:11:00:01' });
    const ip = await ipLink(a, 'cni0');
    assert.equal(br.ifindex, ip.ifindex);
    assert.equal(br.kind, 'bridge');
    assert.equal(ip.linkinfo?.info_kind, 'bridge');
    assert.equal(ip.mtu, 1450);
    assert.equal(br.mtu, 1450);
    assert.equal(ip.address, '02:42:ac:11:00:01');
    assert.equal(br.mac, '02:42:ac:11:00:01');
    assert.ok(ip.flags.includes('UP'));
    assert.equal(br.up, true);
    const all = await a.handle.listLinks();
    const fromIp = await ipJson<IpLink[]>(a.name, ['link', 'show']);
    assert.deepEqual(all.map((l) => [l.ifindex, l.name]).sort(), fromIp.map((l) => [l.ifindex, l.ifname]).sort());
  });

  it('creates a veth whose peer is born named in another namespace, enslaved to the bridge', async () => {
    const host = await a.handle.addLink({ kind: 'veth', name: 'veth1a2b3c4d', master: 'cni0', up: true, peer: { name: 'eth0', netns: b.netns, mtu: 1450 } });
    await b.handle.setLinkUp('eth0');
    const ipHost = await ipLink(a, 'veth1a2b3c4d');
    const ipPeer = await ipLink(b, 'eth0');
    assert.equal(ipHost.master, 'cni0');
    assert.equal(ipHost.linkinfo?.info_kind, 'veth');
    assert.equal(ipPeer.mtu, 1450);
    assert.ok(ipPeer.flags.includes('UP'));
    // The peer: the `@ifN` of `ip link` is the index inside the peer's namespace.
    const peer = a.handle.vethPeer(host);
    assert.ok(peer);
    assert.equal(peer.ifindex, ipPeer.ifindex);
    assert.equal(peer.ifindex, ipHost.link_index);
    assert.equal(peer.netnsId, ipHost.link_netnsid);
    assert.equal(peer.netnsId, await a.handle.netnsId(b.netns));
    const eth0 = await b.handle.getLinkByIndex(peer.ifindex);
    assert.equal(eth0.name, 'eth0');
    assert.equal(host.masterIndex, (await a.handle.getLink('cni0')).ifindex);
    assert.equal(host.slaveKind, 'bridge');
  });

  it('resolves a peer that has the same ifindex as its host end (both "2", the `@if2` case)', async () => {
    const x = await hosts.host('x');
    const y = await hosts.host('y');
    const v = await x.handle.addLink({ kind: 'veth', name: 'veth0', peer: { name: 'eth0', netns: y.netns } });
    const eth0 = await y.handle.getLink('eth0');
    assert.equal(v.ifindex, eth0.ifindex, 'first link after lo in both namespaces');
    for (const link of [v, await x.handle.getLink('veth0'), (await x.handle.listLinks()).find((l) => l.name === 'veth0')!]) {
      assert.deepEqual(x.handle.vethPeer(link), { ifindex: eth0.ifindex, netnsId: await x.handle.netnsId(y.netns) });
    }
  });

  it('creates a veth with both ends in one namespace (peer in the same namespace)', async () => {
    const v = await a.handle.addLink({ kind: 'veth', name: 'tva', peer: { name: 'tvb' } });
    const peer = a.handle.vethPeer(v);
    assert.ok(peer);
    assert.equal(peer.netnsId, null);
    assert.equal((await a.handle.getLinkByIndex(peer.ifindex)).name, 'tvb');
    await a.handle.deleteLink('tva');
    assert.equal(await a.handle.findLink('tvb'), null, 'deleting one end deletes the pair');
  });

  it('creates a vxlan device as flannel does and reads it back', async () => {
    await a.handle.addLink({ kind: 'bridge', name: 'under0', up: true });
    await a.handle.addAddr('under0', '198.18.5.1/24');
    const vx = await a.handle.addLink({ kind: 'vxlan', name: 'flannel.1', vni: 1, local: '198.18.5.1', device: 'under0', port: 8472, learning: false, mtu: 1450, up: true });
    const ip = await ipLink(a, 'flannel.1');
    const data = ip.linkinfo?.info_data ?? {};
    assert.equal(data.id, 1);
    assert.equal(data.local, '198.18.5.1');
    assert.equal(data.port, 8472);
    assert.equal(data.learning, false);
    assert.equal(data.link, 'under0');
    assert.equal(ip.mtu, 1450);
    assert.deepEqual(vx.vxlan, { vni: 1, port: 8472, local: '198.18.5.1', deviceIndex: (await a.handle.getLink('under0')).ifindex, learning: false, gbp: false });
  });

  it('creates a vxlan device with GBP, learning, another port and an IPv6 local address', async () => {
    await a.handle.addAddr('under0', 'fd00:5::1/64', { noDad: true });
    await a.handle.addLink({ kind: 'vxlan', name: 'flannel-v6.7', vni: 7, local: 'fd00:5::1', port: 4789, learning: true, gbp: true });
    const data = (await ipLink(a, 'flannel-v6.7')).linkinfo?.info_data ?? {};
    assert.equal(data.id, 7);
    assert.equal(data.local6 ?? data.local, 'fd00:5::1');
    assert.equal(data.port, 4789);
    assert.equal(data.learning, true);
    assert.equal(data.gbp, true);
    const l = await a.handle.getLink('flannel-v6.7');
    assert.equal(l.vxlan?.gbp, true);
    assert.equal(l.vxlan?.learning, true);
    await a.handle.deleteLink('flannel-v6.7');
  });

  it('sets MTU, MAC, down/up, master and nomaster, and renames', async () => {
    await a.handle.addLink({ kind: 'veth', name: 'tset0', peer: { name: 'tset1' } });
    await a.handle.setLink('tset0', { mtu: 1400, mac: '02:00:00:00:00:aa', up: true, master: 'cni0' });
    let ip = await ipLink(a, 'tset0');
    assert.equal(ip.mtu, 1400);
    assert.equal(ip.address, '02:00:00:00:00:aa');
    assert.ok(ip.flags.includes('UP'));
    assert.equal(ip.master, 'cni0');
    await a.handle.setLink('tset0', { master: null });
    await a.handle.setLinkDown('tset0');
    ip = await ipLink(a, 'tset0');
    assert.equal(ip.master, undefined);
    assert.ok(!ip.flags.includes('UP'));
    const before = await a.handle.getLink('tset0');
    await a.handle.setLink(before, { name: 'trenamed' });
    assert.equal((await ipLink(a, 'trenamed')).ifindex, before.ifindex);
    await a.handle.deleteLink('trenamed');
  });

  it('sets promiscuous mode, and a bridge port\'s hairpin and isolation', async () => {
    await a.handle.setLink('cni0', { promisc: true });
    assert.ok((await ipLink(a, 'cni0')).flags.includes('PROMISC'));
    assert.equal((await a.handle.getLink('cni0')).promisc, true);
    await a.handle.setLink('cni0', { promisc: false });
    assert.ok(!(await ipLink(a, 'cni0')).flags.includes('PROMISC'));
    await a.handle.addLink({ kind: 'veth', name: 'thp0', master: 'cni0', peer: { name: 'thp1' } });
    await a.handle.setBridgePort('thp0', { hairpin: true, isolated: true });
    type Slave = { linkinfo?: { info_slave_data?: { hairpin?: boolean; isolated?: boolean } } };
    let port = (await ipJson<Slave[]>(a.name, ['-d', 'link', 'show', 'dev', 'thp0']))[0]!.linkinfo?.info_slave_data;
    assert.equal(port?.hairpin, true);
    assert.equal(port?.isolated, true);
    await a.handle.setBridgePort('thp0', { hairpin: false });
    port = (await ipJson<Slave[]>(a.name, ['-d', 'link', 'show', 'dev', 'thp0']))[0]!.linkinfo?.info_slave_data;
    assert.equal(port?.hairpin, false);
    await assert.rejects(a.handle.setBridgePort('thp1', { hairpin: true }), /set bridge port link "thp1"/, 'not a bridge port');
    await a.handle.deleteLink('thp0');
  });

  it('moves a link into another namespace, optionally renaming it', async () => {
    await a.handle.addLink({ kind: 'veth', name: 'tmv0', peer: { name: 'tmv1' } });
    await a.handle.moveLink('tmv1', b.netns, 'moved0');
    assert.equal(await a.handle.findLink('tmv1'), null);
    const moved = await b.handle.getLink('moved0');
    const peer = a.handle.vethPeer(await a.handle.getLink('tmv0'));
    assert.equal(peer?.ifindex, moved.ifindex);
    await a.handle.deleteLink('tmv0');
    assert.equal(await b.handle.findLink('moved0'), null);
  });

  it('deletes by name and by Link', async () => {
    const l = await a.handle.addLink({ kind: 'bridge', name: 'tdel0' });
    await a.handle.deleteLink(l);
    assert.equal(await a.handle.findLink('tdel0'), null);
  });

  it('carries many requests in flight on one handle, dumps included', async () => {
    const names = Array.from({ length: 40 }, (_, i) => `tcc${i}`);
    const work: Promise<unknown>[] = [];
    for (const [i, name] of names.entries()) {
      work.push(a.handle.addLink({ kind: 'veth', name, peer: { name: `${name}p`, netns: b.netns } }));
      // A second dump on one socket gets EBUSY from the kernel unless dumps are serialised.
      if (i % 5 === 0) work.push(a.handle.listLinks(), a.handle.listAddrs(), b.handle.listLinks());
    }
    await Promise.all(work);
    const here = new Set((await ipJson<IpLink[]>(a.name, ['link', 'show'])).map((l) => l.ifname));
    const there = new Set((await ipJson<IpLink[]>(b.name, ['link', 'show'])).map((l) => l.ifname));
    for (const name of names) {
      assert.ok(here.has(name), `${name} exists`);
      assert.ok(there.has(`${name}p`), `${name}p exists in b`);
    }
    await Promise.all(names.map((n) => a.handle.deleteLink(n)));
    assert.equal((await a.handle.listLinks()).filter((l) => l.name.startsWith('tcc')).length, 0);
  });

  describe('errors are typed, clear, and change nothing', () => {
    let linksBefore: Link[];
    before(async () => {
      linksBefore = await a.handle.listLinks();
    });
    after(async () => {
      const now = await a.handle.listLinks();
      assert.deepEqual(now.map((l) => l.name).sort(), linksBefore.map((l) => l.name).sort());
    });

    it('creating what exists', () => rejects(a.handle.addLink({ kind: 'bridge', name: 'cni0' }), 'exists', /add bridge "cni0" in netns ".*": already exists \(EEXIST\)/));
    it('a veth whose peer name exists in the target namespace', () =>
      rejects(a.handle.addLink({ kind: 'veth', name: 'tnew0', peer: { name: 'eth0', netns: b.netns } }), 'exists', /EEXIST/));
    it('deleting what is gone', () => rejects(a.handle.deleteLink('nothere0'), 'not-found', /delete link "nothere0".*does not exist \(ENODEV\)/));
    it('getting what is gone', () => rejects(a.handle.getLink('nothere0'), 'not-found', /get link "nothere0"/));
    it('a name longer than 15 characters', () =>
      rejects(a.handle.addLink({ kind: 'bridge', name: 'a-very-long-name0' }), 'invalid', /invalid interface name "a-very-long-name0": 1 to 15 characters/));
    it('a name with a slash', () => rejects(a.handle.addLink({ kind: 'bridge', name: 'a/b' }), 'invalid', /invalid interface name "a\/b"/));
    it('an empty name', () => rejects(a.handle.addLink({ kind: 'bridge', name: '' }), 'invalid', /invalid interface name ""/));
    it('a bad peer name', () => rejects(a.handle.addLink({ kind: 'veth', name: 'tok0', peer: { name: '../etc' } }), 'invalid', /"\.\.\/etc"/));
    it('a bad MAC', () => rejects(a.handle.addLink({ kind: 'bridge', name: 'tmac0', mac: 'zz:00' }), 'invalid', /"zz:00" is not a MAC address/));
    it('a bad MTU', () => rejects(a.handle.setLink('cni0', { mtu: 20 }), 'invalid', /MTU 20 is outside 68..65535/));
    it('a VNI out of range', () => rejects(a.handle.addLink({ kind: 'vxlan', name: 'tvx0', vni: 1 << 24 }), 'invalid', /VNI 16777216/));
    it('a master that does not exist', () => rejects(a.handle.addLink({ kind: 'bridge', name: 'tm0', master: 'nobr0' }), 'not-found', /nobr0/));
    it('a Link read from another namespace is refused, not sent', async () => {
      const eth0InB = await b.handle.getLink('eth0');
      await rejects(a.handle.deleteLink(eth0InB), 'invalid', /read from another network namespace; its ifindex \d+ means nothing here/);
      await rejects(a.handle.addAddr(eth0InB, '10.0.0.1/24'), 'invalid', /another network namespace/);
      assert.ok(await b.handle.findLink('eth0'), 'the link in b is untouched');
    });
  });
});
