import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, describeFamily, parseNetworkConfig } from '../../src/subnet/config.js';
import { formatAddr } from '../../src/ipam/addr.js';

const parse = (o: unknown) => parseNetworkConfig(JSON.stringify(o));
const fails = (o: unknown, text: RegExp) => assert.throws(() => (typeof o === 'string' ? parseNetworkConfig(o) : parse(o)), (e: unknown) => e instanceof ConfigError && text.test(e.message));

describe('net-conf.json', () => {
  it('kube-flannel\'s default: /24 per node from the second subnet to the last, vxlan', () => {
    const c = parse({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    assert.equal(c.ipv4?.subnetLen, 24);
    assert.equal(formatAddr(c.ipv4!.subnetMin), '10.244.1.0');
    assert.equal(formatAddr(c.ipv4!.subnetMax), '10.244.255.0');
    assert.equal(c.ipv6, null);
    assert.deepEqual(c.backend, { type: 'vxlan', options: {} });
    assert.equal(c.enableNFTables, false);
    assert.equal(describeFamily(c.ipv4!), '10.244.0.0/16: /24 subnets from 10.244.1.0 to 10.244.255.0');
  });

  it('matches keys in any letter case, as flannel does, and keeps backend options', () => {
    const c = parse({ network: '10.1.0.0/16', subnetlen: 26, BACKEND: { type: 'VXLAN', VNI: 4096, Port: 4789, DirectRouting: true }, enablenftables: true });
    assert.equal(c.ipv4?.subnetLen, 26);
    assert.equal(c.backend.type, 'vxlan');
    assert.deepEqual(c.backend.options, { VNI: 4096, Port: 4789, DirectRouting: true });
    assert.equal(c.enableNFTables, true);
  });

  it('defaults the backend to vxlan, and says so', () => {
    const c = parse({ Network: '10.244.0.0/16' });
    assert.equal(c.backend.type, 'vxlan');
    assert.match(c.notes.join(), /Backend is not set: using vxlan/);
  });

  it('small networks: a quarter per node; /28 is the smallest', () => {
    assert.equal(parse({ Network: '10.0.0.0/23' }).ipv4?.subnetLen, 25);
    assert.equal(parse({ Network: '10.0.0.0/22' }).ipv4?.subnetLen, 24);
    assert.equal(parse({ Network: '10.0.0.0/28' }).ipv4?.subnetLen, 30);
    fails({ Network: '10.0.0.0/29' }, /Network 10.0.0.0\/29 is too small: the smallest useful network is \/28/);
  });

  it('SubnetMin and SubnetMax: inside the network and aligned', () => {
    const c = parse({ Network: '10.244.0.0/16', SubnetMin: '10.244.10.0', SubnetMax: '10.244.20.0' });
    assert.equal(formatAddr(c.ipv4!.subnetMin), '10.244.10.0');
    fails({ Network: '10.244.0.0/16', SubnetMin: '10.245.0.0' }, /SubnetMin 10.245.0.0 is not in Network 10.244.0.0\/16/);
    fails({ Network: '10.244.0.0/16', SubnetMax: '10.244.20.7' }, /SubnetMax 10.244.20.7 is not on a \/24 boundary/);
    fails({ Network: '10.244.0.0/16', SubnetMin: '10.244.30.0', SubnetMax: '10.244.20.0' }, /SubnetMin 10.244.30.0 is after SubnetMax 10.244.20.0/);
  });

  it('dual stack and IPv6-only', () => {
    const d = parse({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
    assert.equal(d.ipv6?.subnetLen, 64);
    assert.equal(formatAddr(d.ipv6!.subnetMin), 'fd00:10:244:1::');
    assert.equal(formatAddr(d.ipv6!.subnetMax), 'fd00:10:244:ff::');
    const only6 = parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 56 });
    assert.equal(only6.ipv4, null);
    assert.equal(only6.ipv6?.subnetLen, 56);
  });

  it('errors name the key and the value', () => {
    fails('{"Network": ', /net-conf.json is not valid JSON/);
    fails([], /must be a JSON object/);
    fails({}, /Network is missing: the cluster's IPv4 CIDR/);
    fails({ Network: '10.244.0.0' }, /Network "10.244.0.0" is not an IPv4 CIDR/);
    fails({ Network: '10.244.1.0/16' }, /Network 10.244.1.0\/16 has host bits set: the network is 10.244.0.0\/16/);
    fails({ Network: '10.244.0.0/16', SubnetLen: 31 }, /SubnetLen 31 is longer than 30/);
    fails({ Network: '10.244.0.0/16', SubnetLen: 17 }, /SubnetLen 17 leaves Network 10.244.0.0\/16 fewer than four subnets: use \/18 or longer/);
    fails({ Network: '10.244.0.0/16', SubnetLen: '24' }, /SubnetLen must be a prefix length, got "24"/);
    fails({ Network: '10.244.0.0/16', EnableIPv6: true }, /IPv6Network is missing/);
    fails({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '10.0.0.0/8' }, /IPv6Network "10.0.0.0\/8" is not an IPv6 CIDR/);
    fails({ EnableIPv4: false }, /EnableIPv4 and EnableIPv6 are both false/);
    fails({ Network: '10.244.0.0/16', EnableIPv4: 'yes' }, /EnableIPv4 must be true or false, got "yes"/);
    fails({ Network: '10.244.0.0/16', Backend: 'vxlan' }, /Backend must be an object such as \{"Type": "vxlan"\}, got "vxlan"/);
  });
});
