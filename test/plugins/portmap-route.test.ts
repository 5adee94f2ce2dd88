// portmap's route lookup over /proc/net/route text (the table as a little-endian
// host prints it), and against the kernel's own table in a test namespace.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { routeInterface } from '../../src/plugins/portmap/route.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

const HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';
const ip = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;

describe('portmap: the interface a pod address is routed through', () => {
  // 10.244.1.0/24 dev cni0; default via 192.168.1.1 dev eth0; blackhole 10.244.0.0/16;
  // 10.244.1.128/25 dev big metric 4294967295 (printed as -1); 10.244.1.128/25 dev small metric 5.
  const table = [
    HEADER,
    'eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
    'cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    '*\t0000F40A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0',
    'big\t8001F40A\t00000000\t0001\t0\t0\t-1\t80FFFFFF\t0\t0\t0',
    'small\t8001F40A\t00000000\t0001\t0\t0\t5\t80FFFFFF\t0\t0\t0',
  ].join('\n');

  it('longest prefix first, then the lowest metric (the kernel prints it signed)', () => {
    assert.equal(routeInterface(table, ip(10, 244, 1, 5), true), 'cni0');
    assert.equal(routeInterface(table, ip(10, 244, 1, 200), true), 'small');
  });

  it('a blackhole route leads to no interface: the default route wins, never "*"', () => {
    assert.equal(routeInterface(table, ip(10, 244, 9, 9), true), 'eth0');
    assert.equal(routeInterface([HEADER, table.split('\n')[3]].join('\n'), ip(10, 244, 9, 9), true), null);
  });

  it('/32 and /0, and a big-endian host (no byte swap)', () => {
    const host = [HEADER, 'lo9\t0A0BF40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0'].join('\n');
    assert.equal(routeInterface(host, ip(10, 244, 11, 10), true), 'lo9');
    assert.equal(routeInterface(host, ip(10, 244, 11, 11), true), null);
    const be = [HEADER, 'eth1\tC0A80000\t00000000\t0001\t0\t0\t0\tFFFF0000\t0\t0\t0'].join('\n');
    assert.equal(routeInterface(be, ip(192, 168, 3, 4), false), 'eth1');
    assert.equal(routeInterface('', ip(1, 2, 3, 4), true), null);
  });

  describe('against the kernel', () => {
    const hosts = new TestHosts();
    let h: TestHost;
    before(async () => {
      h = await hosts.host('pmroute', {});
    });
    after(() => hosts.cleanup());

    it('matches what `ip route get` answers', async () => {
      await h.handle.addLink({ kind: 'bridge', name: 'br9', up: true });
      await h.exec('ip', ['addr', 'add', '10.99.1.1/24', 'dev', 'br9']);
      await h.exec('ip', ['route', 'add', 'blackhole', '10.99.0.0/16']);
      const text = await h.exec('cat', ['/proc/net/route']);
      const le = endianness() === 'LE';
      assert.equal(routeInterface(text, ip(10, 99, 1, 7), le), 'br9');
      assert.match(await h.exec('ip', ['route', 'get', '10.99.1.7']), /dev br9/);
      assert.equal(routeInterface(text, ip(10, 99, 2, 7), le), null, 'the blackhole is no interface');
    });
  });
});
