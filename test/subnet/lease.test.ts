import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseFormatError, decodeAttrs, describeLease, encodeAttrs, leaseKey, parseLeaseKey } from '../../src/subnet/lease.js';
import { parseCidr } from '../../src/ipam/addr.js';

describe('leases in flannel\'s format', () => {
  it('keys: IPv4, IPv6 and dual stack, both ways', () => {
    const v4 = parseCidr('10.244.1.0/24')!;
    const v6 = parseCidr('fd00:10:244:1::/64')!;
    assert.equal(leaseKey({ subnet: v4, ipv6Subnet: null }), '10.244.1.0-24');
    assert.equal(leaseKey({ subnet: null, ipv6Subnet: v6 }), 'fd00:10:244:1::-64');
    assert.equal(leaseKey({ subnet: v4, ipv6Subnet: v6 }), '10.244.1.0-24&fd00:10:244:1::-64');
    const back = parseLeaseKey('10.244.1.0-24&fd00:10:244:1::-64');
    assert.deepEqual(back, { subnet: v4, ipv6Subnet: v6 });
    assert.deepEqual(parseLeaseKey('fd00:10:244:1::-64&10.244.1.0-24'), back);
  });

  it('refuses keys that do not name a subnet', () => {
    for (const bad of ['10.244.1.5-24', '10.244.1.0', 'garbage', '10.244.1.0-24&10.244.2.0-24', 'a&b&c']) {
      assert.throws(() => parseLeaseKey(bad), LeaseFormatError, bad);
    }
  });

  it('attrs: flannel\'s JSON, written and read', () => {
    const attrs = { publicIp: '192.168.0.11', publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:ff' }, backendV6Data: null };
    assert.equal(encodeAttrs(attrs), '{"PublicIP":"192.168.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}');
    assert.deepEqual(decodeAttrs(encodeAttrs(attrs), 'k'), attrs);
    // As flanneld writes it (PublicIPv6 null), and with Go's case-insensitive keys.
    const fromFlannel = decodeAttrs('{"PublicIP":"192.168.0.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}}', 'k');
    assert.equal(fromFlannel.publicIp, '192.168.0.12');
    assert.equal(decodeAttrs('{"publicip":"10.0.0.1","backendtype":"host-gw"}', 'k').backendType, 'host-gw');
    const dual = { ...attrs, publicIpv6: 'fd00::11', backendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:00' } };
    assert.deepEqual(decodeAttrs(encodeAttrs(dual), 'k'), dual);
    assert.equal(describeLease({ subnet: parseCidr('10.244.1.0/24')!, ipv6Subnet: null, attrs, expiresAt: null }), '10.244.1.0/24 (192.168.0.11, vxlan)');
  });

  it('a malformed lease is an error naming the lease (the agent logs and skips it)', () => {
    assert.throws(() => decodeAttrs('{', '10.244.9.0-24'), /lease 10.244.9.0-24: its value is not JSON/);
    assert.throws(() => decodeAttrs('[]', 'k'), /must be a JSON object/);
    assert.throws(() => decodeAttrs('{"PublicIP":"fd00::1"}', 'k'), /PublicIP "fd00::1" is not an IPv4 address/);
    assert.throws(() => decodeAttrs('{"PublicIP":"10.0.0.1","BackendType":7}', 'k'), /BackendType must be a string/);
  });
});
