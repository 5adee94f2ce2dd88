import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { KernelError, readSysctl, sysctlPath } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

const rootValue = (key: string) => readFileSync(sysctlPath(key), 'utf8').trim();

describe('sysctls', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('a', {});
  });
  after(() => hosts.cleanup());

  it('writes inside the namespace and never in the root namespace', async () => {
    for (const key of ['net.ipv4.ip_forward', 'net.ipv4.conf.all.rp_filter', 'net.ipv6.conf.all.forwarding']) {
      const root = rootValue(key);
      const other = root === '1' ? '0' : '1';
      h.handle.writeSysctl(key, other);
      assert.equal(h.handle.readSysctl(key), other);
      assert.equal((await h.exec('cat', [sysctlPath(key)])).trim(), other, 'the namespace itself says so');
      assert.equal(rootValue(key), root, `${key} in the root namespace did not move`);
    }
  });

  it('handles interface names with dots (slash form), e.g. flannel.1', async () => {
    await h.handle.addLink({ kind: 'bridge', name: 'flannel.1' });
    h.handle.writeSysctl('net/ipv4/conf/flannel.1/rp_filter', 2);
    assert.equal(h.handle.readSysctl('net/ipv4/conf/flannel.1/rp_filter'), '2');
    assert.equal((await h.exec('cat', ['/proc/sys/net/ipv4/conf/flannel.1/rp_filter'])).trim(), '2');
  });

  it('reads the root namespace when no namespace is given', () => {
    assert.equal(readSysctl(null, 'net.ipv4.ip_forward'), rootValue('net.ipv4.ip_forward'));
  });

  it('refuses keys outside net and path tricks, before touching anything', () => {
    const invalid = (key: string) => assert.throws(() => h.handle.readSysctl(key), (e: unknown) => e instanceof KernelError && e.kind === 'invalid' && /only touches network sysctls/.test(e.message));
    invalid('kernel.hostname');
    invalid('net/../../etc/passwd');
    invalid('net');
    invalid('net..ipv4');
  });

  it('a sysctl that does not exist is an error naming it', () => {
    assert.throws(() => h.handle.readSysctl('net.ipv4.conf.nosuchdev0.rp_filter'), /nosuchdev0/);
  });
});
