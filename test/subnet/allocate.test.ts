import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { OutOfSubnetsError, chooseSubnet, freeSubnets } from '../../src/subnet/allocate.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { formatCidr, parseCidr } from '../../src/ipam/addr.js';
import type { Lease } from '../../src/subnet/lease.js';

const cfg = (o: object) => parseNetworkConfig(JSON.stringify(o)).ipv4!;
const lease = (subnet: string, publicIp: string): Lease => ({
  subnet: parseCidr(subnet)!, ipv6Subnet: null, expiresAt: null,
  attrs: { publicIp, publicIpv6: null, backendType: 'vxlan', backendData: null, backendV6Data: null },
});

describe('choosing a subnet', () => {
  const f = cfg({ Network: '10.244.0.0/16' });

  it('takes this node\'s own lease again (same public IP)', () => {
    const mine = lease('10.244.7.0/24', '192.168.0.7');
    const c = chooseSubnet(f, [lease('10.244.1.0/24', '192.168.0.1'), mine], { publicIp: '192.168.0.7', previous: parseCidr('10.244.9.0/24') });
    assert.deepEqual(c, { kind: 'own-lease', lease: mine });
  });

  it('ignores an own lease that no longer fits the config (length or range changed)', () => {
    const f2 = cfg({ Network: '10.244.0.0/16', SubnetLen: 25 });
    const c = chooseSubnet(f2, [lease('10.244.7.0/24', '192.168.0.7')], { publicIp: '192.168.0.7', previous: null }, () => 0);
    assert.equal(c.kind, 'random');
  });

  it('takes the subnet of the old subnet.env when free, not when taken', () => {
    const prev = parseCidr('10.244.9.0/24')!;
    assert.deepEqual(chooseSubnet(f, [], { publicIp: '192.168.0.7', previous: prev }), { kind: 'previous', subnet: prev });
    const c = chooseSubnet(f, [lease('10.244.9.0/24', '192.168.0.9')], { publicIp: '192.168.0.7', previous: prev }, () => 0);
    assert.equal(c.kind, 'random');
    assert.equal(formatCidr((c as { subnet: typeof prev }).subnet), '10.244.1.0/24', 'first free from SubnetMin (the first subnet is skipped)');
  });

  it('picks at random among the first 100 free subnets, never a taken one', () => {
    const taken = [lease('10.244.1.0/24', 'a'), lease('10.244.2.0/24', 'b')];
    const free = freeSubnets(f, taken.map((l) => l.subnet!));
    assert.equal(free.length, 100);
    assert.equal(formatCidr(free[0]!), '10.244.3.0/24');
    assert.equal(formatCidr(free[99]!), '10.244.102.0/24');
    const last = chooseSubnet(f, taken, { publicIp: null, previous: null }, () => 0.9999);
    assert.equal(formatCidr((last as { subnet: ReturnType<typeof parseCidr> & object }).subnet), '10.244.102.0/24');
  });

  it('never offers a subnet that overlaps a lease of another length (SubnetLen changed)', () => {
    const f25 = cfg({ Network: '10.244.0.0/16', SubnetLen: 25 });
    const free = freeSubnets(f25, [parseCidr('10.244.0.0/24')!, parseCidr('10.244.1.0/24')!], 3);
    assert.deepEqual(free.map(formatCidr), ['10.244.2.0/25', '10.244.2.128/25', '10.244.3.0/25']);
    const wide = freeSubnets(f, [parseCidr('10.244.0.0/22')!], 1);
    assert.deepEqual(wide.map(formatCidr), ['10.244.4.0/24'], 'a /22 lease covers four /24s');
  });

  it('says "out of subnets" with what to do', () => {
    const tiny = cfg({ Network: '10.0.0.0/28' }); // /30s: 10.0.0.4, .8, .12 usable
    const leases = ['10.0.0.4/30', '10.0.0.8/30', '10.0.0.12/30'].map((s, i) => lease(s, `192.168.0.${i}`));
    assert.throws(() => chooseSubnet(tiny, leases, { publicIp: '192.168.0.99', previous: null }), (e: unknown) =>
      e instanceof OutOfSubnetsError && /out of subnets: every \/30 of 10.0.0.0\/28 between 10.0.0.4 and 10.0.0.12 is leased \(3 leases\)/.test(e.message));
  });
});
