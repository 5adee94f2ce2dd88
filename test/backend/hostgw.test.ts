import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson } from '../support/exec.js';
import { HostGwBackend } from '../../src/backend/hostgw.js';
import { TWILL_ROUTE_PROTOCOL } from '../../src/backend/backend.js';
import { parseCidr } from '../../src/ipam/addr.js';
import type { Lease } from '../../src/subnet/lease.js';

const lease = (subnet: string, publicIp: string, subnet6?: string, publicIpv6?: string): Lease => ({
  subnet: parseCidr(subnet)!, ipv6Subnet: subnet6 ? parseCidr(subnet6)! : null, expiresAt: null,
  attrs: { publicIp, publicIpv6: publicIpv6 ?? null, backendType: 'host-gw', backendData: null, backendV6Data: null },
});

async function attachPod(node: TestHost, pod: TestHost, net: string, net6: string): Promise<void> {
  await node.handle.addLink({ kind: 'veth', name: 'vethpod', up: true, peer: { name: 'eth0', netns: pod.netns } });
  await node.handle.addAddr('vethpod', `${net}.1/24`);
  await node.handle.addAddr('vethpod', `${net6}::1/64`);
  await pod.handle.setLinkUp('eth0');
  await pod.handle.addAddr('eth0', `${net}.2/24`);
  await pod.handle.addAddr('eth0', `${net6}::2/64`);
  await pod.handle.addRoute({ dst: 'default', gateway: `${net}.1` });
  await pod.handle.addRoute({ dst: 'default6', gateway: `${net6}::1` });
}

describe('host-gw backend', () => {
  const hosts = new TestHosts();
  let a: TestHost;
  let b: TestHost;
  let podA: TestHost;
  let podB: TestHost;
  before(async () => {
    const { hosts: n } = await hosts.underlay({ na: '198.18.1.1/24', nb: '198.18.1.2/24' });
    a = n.na!;
    b = n.nb!;
    await a.handle.addAddr('eth0', 'fd18:1::1/64');
    await b.handle.addAddr('eth0', 'fd18:1::2/64');
    podA = await hosts.host('hpa');
    podB = await hosts.host('hpb');
    await attachPod(a, podA, '10.246.1', 'fd46:1');
    await attachPod(b, podB, '10.246.2', 'fd46:2');
  });
  after(() => hosts.cleanup());

  it('routes each remote subnet via the peer\'s public IP (IPv4 and IPv6); pods reach each other', async () => {
    await new HostGwBackend(a.handle, 'eth0').addPeer(lease('10.246.2.0/24', '198.18.1.2', 'fd46:2::/64', 'fd18:1::2'));
    await new HostGwBackend(b.handle, 'eth0').addPeer(lease('10.246.1.0/24', '198.18.1.1', 'fd46:1::/64', 'fd18:1::1'));
    const [r] = await ipJson<{ gateway: string; dev: string; protocol: string }[]>(a.name, ['route', 'show', '10.246.2.0/24']);
    assert.deepEqual([r?.gateway, r?.dev, r?.protocol], ['198.18.1.2', 'eth0', String(TWILL_ROUTE_PROTOCOL)]);
    await podA.exec('ping', ['-c', '1', '-W', '2', '10.246.2.2']);
    await podA.exec('ping', ['-c', '1', '-W', '2', 'fd46:2::2']);
  });

  it('refuses a peer that is not on-link, naming it and what to use instead', async () => {
    await assert.rejects(new HostGwBackend(a.handle, 'eth0').addPeer(lease('10.246.3.0/24', '203.0.113.3')), /host-gw cannot reach 10.246.3.0\/24: its node 203.0.113.3 is not on-link via eth0 .*use the vxlan backend/);
    assert.deepEqual(await ipJson(a.name, ['route', 'show', '10.246.3.0/24']), []);
  });

  it('removal deletes only its own routes, idempotently', async () => {
    await a.handle.addRoute({ dst: '10.250.0.0/24', gateway: '198.18.1.2' }); // an administrator's
    const gw = new HostGwBackend(a.handle, 'eth0');
    const l = lease('10.246.2.0/24', '198.18.1.2', 'fd46:2::/64', 'fd18:1::2');
    await gw.removePeer(l);
    await gw.removePeer(l);
    assert.deepEqual(await ipJson(a.name, ['route', 'show', '10.246.2.0/24']), []);
    assert.deepEqual(await ipJson(a.name, ['-6', 'route', 'show', 'fd46:2::/64']), []);
    assert.equal((await ipJson(a.name, ['route', 'show', '10.250.0.0/24'])).length, 1);
    await assert.rejects(podA.exec('ping', ['-c', '1', '-W', '1', '10.246.2.2']));
  });
});
