import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { listNetns, netnsExists } from '../../src/kernel/index.js';
import { RUN_PREFIX, TestHosts } from './hosts.js';
import { diffRootState, type RootState } from './rootstate.js';

describe('test hosts', () => {
  it('builds an underlay where hosts reach each other, and deletes exactly its namespaces', async () => {
    const hosts = new TestHosts();
    let names: string[] = [];
    try {
      const { switch: sw, hosts: h } = await hosts.underlay({ n1: '198.18.0.1/24', n2: '198.18.0.2/24', n3: 'fd18::3/64' });
      await h.n3!.handle.addAddr('eth0', '198.18.0.3/24');
      await h.n1!.handle.addAddr('eth0', 'fd18::1/64');
      names = [sw.name, h.n1!.name, h.n2!.name, h.n3!.name];
      for (const n of names) assert.ok(n.startsWith(RUN_PREFIX), `${n} carries the run prefix`);
      await h.n1!.exec('ping', ['-c', '1', '-W', '2', '198.18.0.2']);
      await h.n1!.exec('ping', ['-c', '1', '-W', '2', 'fd18::3']);
      assert.equal(h.n1!.handle.readSysctl('net.ipv4.ip_forward'), '1');
      assert.equal(h.n2!.handle.readSysctl('net.ipv4.conf.all.rp_filter'), '0');
      await assert.rejects(h.n1!.exec('ping', ['-c', '1', '-W', '1', '198.18.0.99']), 'ping to nobody fails: the oracle can fail');
    } finally {
      await hosts.cleanup();
    }
    for (const n of names) assert.equal(netnsExists(n), false, `${n} was deleted`);
    assert.equal(listNetns().filter((n) => names.includes(n)).length, 0);
  });

  it('the leak check sees every kind of change to the root namespace', () => {
    const before: RootState = { links: ['{"ifname":"eth0"}'], sysctls: ['net/ipv4/ip_forward=0'] };
    assert.deepEqual(diffRootState(before, before), []);
    const after: RootState = { links: ['{"ifname":"eth0"}', '{"ifname":"veth0"}'], sysctls: ['net/ipv4/ip_forward=1'] };
    assert.deepEqual(diffRootState(before, after), [
      'links: new: {"ifname":"veth0"}',
      'sysctls: gone: net/ipv4/ip_forward=0',
      'sysctls: new: net/ipv4/ip_forward=1',
    ]);
  });
});
