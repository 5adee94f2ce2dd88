import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { bridgeJson, ipJson } from '../support/exec.js';
import { sourceSeenBy } from '../support/traffic.js';
import { VxlanBackend } from '../../src/backend/vxlan.js';
import { TWILL_ROUTE_PROTOCOL } from '../../src/backend/backend.js';
import { parseCidr } from '../../src/ipam/addr.js';
import type { Lease } from '../../src/subnet/lease.js';

interface Node { host: TestHost; pod: TestHost; backend: VxlanBackend; lease: Lease }

const lease = (subnet: string, publicIp: string, mac: string): Lease => ({
  subnet: parseCidr(subnet)!, ipv6Subnet: null, expiresAt: null,
  attrs: { publicIp, publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, backendV6Data: null },
});

/** A pod on the node: a veth into its own namespace, .2 of the node's subnet, default via the node's .1. */
async function attachPod(node: TestHost, pod: TestHost, subnet: string): Promise<void> {
  const net = subnet.split('/')[0]!.split('.').slice(0, 3).join('.');
  await node.handle.addLink({ kind: 'bridge', name: 'cni0', up: true, mtu: 1450 });
  await node.handle.addAddr('cni0', `${net}.1/24`);
  await node.handle.addLink({ kind: 'veth', name: 'vethpod', up: true, master: 'cni0', mtu: 1450, peer: { name: 'eth0', netns: pod.netns, mtu: 1450 } });
  await pod.handle.setLinkUp('eth0');
  await pod.handle.addAddr('eth0', `${net}.2/24`);
  await pod.handle.addRoute({ dst: 'default', gateway: `${net}.1` });
}

describe('vxlan backend: two nodes, pods reach each other across the overlay', () => {
  const hosts = new TestHosts();
  let a: Node;
  let b: Node;
  before(async () => {
    const { hosts: n } = await hosts.underlay({ na: '198.18.0.1/24', nb: '198.18.0.2/24' });
    const make = async (host: TestHost, subnet: string, ip: string, mac: string): Promise<Node> => {
      const pod = await hosts.host(`${host.name.slice(-2)}pod`);
      const backend = new VxlanBackend(host.handle, { vni: 1, port: 0, gbp: false, learning: false, directRouting: false, mtu: 1450, localIp: ip, underlayDevice: 'eth0', vtepMac: mac });
      await backend.ensureDevice(parseCidr(subnet)!);
      await attachPod(host, pod, subnet);
      return { host, pod, backend, lease: lease(subnet, ip, mac) };
    };
    a = await make(n.na!, '10.244.1.0/24', '198.18.0.1', '0a:58:0a:f4:01:00');
    b = await make(n.nb!, '10.244.2.0/24', '198.18.0.2', '0a:58:0a:f4:02:00');
  });
  after(() => hosts.cleanup());

  it('creates flannel.1 as flannel does: VNI 1, port 8472, no learning, MTU 1450, the subnet .0/32', async () => {
    const [dev] = await ipJson<{ mtu: number; address: string; linkinfo: { info_data: { id: number; port: number; learning: boolean; local: string } }; addr_info: { local: string; prefixlen: number }[] }[]>(a.host.name, ['-d', 'addr', 'show', 'dev', 'flannel.1']);
    assert.equal(dev!.linkinfo.info_data.id, 1);
    assert.equal(dev!.linkinfo.info_data.port, 8472);
    assert.equal(dev!.linkinfo.info_data.learning, false);
    assert.equal(dev!.linkinfo.info_data.local, '198.18.0.1');
    assert.equal(dev!.mtu, 1450);
    assert.equal(dev!.address, '0a:58:0a:f4:01:00');
    assert.deepEqual(dev!.addr_info.filter((x) => x.local.includes('.')).map((x) => `${x.local}/${x.prefixlen}`), ['10.244.1.0/32']);
    await a.backend.ensureDevice(a.lease.subnet!); // idempotent
  });

  it('programs neighbour, FDB and onlink route; pod-to-pod works with the source IP preserved', async () => {
    await assert.rejects(a.pod.exec('ping', ['-c', '1', '-W', '1', '10.244.2.2']), 'no path before the peer is programmed');
    await a.backend.addPeer(b.lease, null);
    await b.backend.addPeer(a.lease, null);
    const neigh = await ipJson<{ dst: string; lladdr: string; state: string[] }[]>(a.host.name, ['neigh', 'show', 'dev', 'flannel.1']);
    assert.ok(neigh.some((x) => x.dst === '10.244.2.0' && x.lladdr === '0a:58:0a:f4:02:00' && x.state.includes('PERMANENT')));
    const fdb = await bridgeJson<{ mac: string; dst?: string }[]>(a.host.name, ['fdb', 'show', 'dev', 'flannel.1']);
    assert.ok(fdb.some((x) => x.mac === '0a:58:0a:f4:02:00' && x.dst === '198.18.0.2'));
    const [route] = await ipJson<{ gateway: string; dev: string; flags: string[]; protocol: string }[]>(a.host.name, ['route', 'show', '10.244.2.0/24']);
    assert.deepEqual([route?.gateway, route?.dev, route?.flags.includes('onlink'), route?.protocol], ['10.244.2.0', 'flannel.1', true, String(TWILL_ROUTE_PROTOCOL)]);
    await a.pod.exec('ping', ['-c', '2', '-W', '2', '10.244.2.2']);
    assert.equal(await sourceSeenBy(b.pod, '10.244.2.2', a.pod), '10.244.1.2', 'no NAT between pods');
    // A full-size packet: 1450 with DF passes (1422 bytes of ICMP payload + 28), one more does not.
    await a.pod.exec('ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', '1422', '10.244.2.2']);
    await assert.rejects(a.pod.exec('ping', ['-c', '1', '-W', '1', '-M', 'do', '-s', '1423', '10.244.2.2']));
  });

  it('a peer back with a new VtepMAC: neighbour and FDB replaced, the stale FDB entry deleted', async () => {
    const renewed = lease('10.244.2.0/24', '198.18.0.2', '0a:58:0a:f4:02:99');
    // The peer restarted: changing a device's MAC flushes its neighbours (permanent ones too), so it reprograms its peers.
    await b.host.handle.setLink('flannel.1', { mac: '0a:58:0a:f4:02:99' });
    await b.backend.addPeer(a.lease, null);
    await a.backend.addPeer(renewed, b.lease);
    const fdb = await bridgeJson<{ mac: string; dst?: string }[]>(a.host.name, ['fdb', 'show', 'dev', 'flannel.1']);
    assert.deepEqual(fdb.filter((x) => x.dst).map((x) => x.mac), ['0a:58:0a:f4:02:99']);
    await a.pod.exec('ping', ['-c', '1', '-W', '2', '10.244.2.2']);
    b.lease = renewed;
  });

  it('removing a peer removes exactly what was installed; an administrator\'s route stays', async () => {
    await a.host.handle.addRoute({ dst: '10.99.0.0/24', gateway: '198.18.0.254' });
    await a.backend.removePeer(b.lease);
    await a.backend.removePeer(b.lease); // idempotent
    assert.deepEqual(await ipJson(a.host.name, ['route', 'show', '10.244.2.0/24']), []);
    assert.deepEqual((await bridgeJson<{ dst?: string }[]>(a.host.name, ['fdb', 'show', 'dev', 'flannel.1'])).filter((x) => x.dst), []);
    assert.equal((await ipJson<{ dst: string }[]>(a.host.name, ['neigh', 'show', 'dev', 'flannel.1'])).some((x) => x.dst === '10.244.2.0'), false);
    assert.equal((await ipJson(a.host.name, ['route', 'show', '10.99.0.0/24'])).length, 1);
    await assert.rejects(a.pod.exec('ping', ['-c', '1', '-W', '1', '10.244.2.2']));
  });

  it('a lease without a usable VtepMAC is refused with a message naming it, and nothing is installed', async () => {
    const bad = { ...b.lease, attrs: { ...b.lease.attrs, backendData: { VNI: 1 } } };
    await assert.rejects(a.backend.addPeer(bad, null), /lease 10.244.2.0\/24 has no usable VtepMAC/);
    assert.deepEqual(await ipJson(a.host.name, ['route', 'show', '10.244.2.0/24']), []);
  });

  it('DirectRouting: a peer on the same link is routed via its public IP, not through VXLAN', async () => {
    const direct = new VxlanBackend(a.host.handle, { vni: 1, port: 0, gbp: false, learning: false, directRouting: true, mtu: 1450, localIp: '198.18.0.1', underlayDevice: 'eth0', vtepMac: '0a:58:0a:f4:01:00' });
    const directB = new VxlanBackend(b.host.handle, { vni: 1, port: 0, gbp: false, learning: false, directRouting: true, mtu: 1450, localIp: '198.18.0.2', underlayDevice: 'eth0', vtepMac: '0a:58:0a:f4:02:99' });
    await direct.addPeer(b.lease, null);
    await directB.addPeer(a.lease, null);
    const [route] = await ipJson<{ gateway: string; dev: string }[]>(a.host.name, ['route', 'show', '10.244.2.0/24']);
    assert.deepEqual([route?.gateway, route?.dev], ['198.18.0.2', 'eth0']);
    const txBefore = (await ipJson<{ stats64: { tx: { packets: number } } }[]>(a.host.name, ['-s', 'link', 'show', 'dev', 'flannel.1']))[0]!.stats64.tx.packets;
    await a.pod.exec('ping', ['-c', '2', '-W', '2', '10.244.2.2']);
    const txAfter = (await ipJson<{ stats64: { tx: { packets: number } } }[]>(a.host.name, ['-s', 'link', 'show', 'dev', 'flannel.1']))[0]!.stats64.tx.packets;
    assert.equal(txAfter, txBefore, 'nothing went through flannel.1');
    await direct.removePeer(b.lease);
    assert.deepEqual(await ipJson(a.host.name, ['route', 'show', '10.244.2.0/24']), []);
  });
});
