import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatResult, parseResult } from '../../src/cni/result.js';
import { checkKnownArgs, parseCniArgs } from '../../src/cni/args.js';
import { CniError } from '../../src/cni/errors.js';
import type { CniResult } from '../../src/cni/types.js';

const current: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'cni0', mac: '0a:00:00:00:00:01' }, { name: 'veth1', mac: '0a:00:00:00:00:02' }, { name: 'eth0', mac: '0a:00:00:00:00:03', mtu: 1450, sandbox: '/run/netns/p' }],
  ips: [
    { interface: 2, address: '10.244.1.5/24', gateway: '10.244.1.1' },
    { interface: 2, address: '10.244.9.5/24', gateway: '10.244.9.1' },
    { interface: 2, address: 'fd00::5/64', gateway: 'fd00::1' },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }, { dst: '::/0' }, { dst: '10.96.0.0/12', mtu: 1400 }],
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
};

describe('results across spec versions', () => {
  it('1.1.0 and 1.0.0 keep everything, without ips[].version', () => {
    const out = formatResult(current, '1.0.0');
    assert.deepEqual(Object.keys(out), ['cniVersion', 'interfaces', 'ips', 'routes', 'dns'], 'the field order Go prints');
    assert.deepEqual((out.ips as object[])[0], { interface: 2, address: '10.244.1.5/24', gateway: '10.244.1.1' });
    assert.deepEqual((out.interfaces as object[])[2], { name: 'eth0', mac: '0a:00:00:00:00:03', mtu: 1450, sandbox: '/run/netns/p' });
    assert.deepEqual((out.routes as object[])[2], { dst: '10.96.0.0/12', mtu: 1400 });
  });

  it('0.4.0 / 0.3.x add ips[].version and drop fields they do not know', () => {
    for (const v of ['0.4.0', '0.3.1', '0.3.0']) {
      const out = formatResult(current, v);
      assert.equal(out.cniVersion, v);
      assert.deepEqual((out.ips as object[]).map((i) => (i as { version: string }).version), ['4', '4', '6']);
      assert.deepEqual((out.interfaces as object[])[2], { name: 'eth0', mac: '0a:00:00:00:00:03', sandbox: '/run/netns/p' });
      assert.deepEqual((out.routes as object[])[2], { dst: '10.96.0.0/12' });
    }
  });

  it('0.2.0 / 0.1.0 keep the first address of each family, with its routes', () => {
    const out = formatResult(current, '0.2.0');
    assert.deepEqual(out, {
      cniVersion: '0.2.0',
      ip4: { ip: '10.244.1.5/24', gateway: '10.244.1.1', routes: [{ dst: '0.0.0.0/0', gw: '10.244.1.1' }, { dst: '10.96.0.0/12' }] },
      ip6: { ip: 'fd00::5/64', gateway: 'fd00::1', routes: [{ dst: '::/0' }] },
      dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
    });
  });

  it('an empty dns is kept in 0.x (Go prints it) and left out in 1.x (libcni 1.1+)', () => {
    const bare: CniResult = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
    assert.deepEqual(formatResult(bare, '0.4.0').dns, {});
    assert.equal('dns' in formatResult(bare, '1.0.0'), false);
  });

  it('a result without any address cannot be given to a 0.2.0 runtime', () => {
    assert.throws(() => formatResult({ cniVersion: '1.0.0', interfaces: [{ name: 'lo' }] }, '0.2.0'), (e: unknown) => e instanceof CniError && e.code === 1 && /no IP address/.test(e.message));
  });

  it('parses every version back into the current shape (round trip)', () => {
    for (const v of ['1.1.0', '1.0.0', '0.4.0', '0.3.1', '0.3.0']) {
      const back = parseResult(formatResult(current, v));
      assert.deepEqual(back.ips?.map((i) => i.address), ['10.244.1.5/24', '10.244.9.5/24', 'fd00::5/64'], v);
      assert.equal(back.interfaces?.[2]?.sandbox, '/run/netns/p');
    }
    const old = parseResult(formatResult(current, '0.2.0'));
    assert.deepEqual(old.ips, [{ address: '10.244.1.5/24', gateway: '10.244.1.1' }, { address: 'fd00::5/64', gateway: 'fd00::1' }]);
    assert.deepEqual(old.routes?.map((r) => r.dst), ['0.0.0.0/0', '10.96.0.0/12', '::/0']);
  });

  it('refuses a malformed result with code 6 and the path of the bad field', () => {
    const bad = (raw: unknown, text: RegExp) => assert.throws(() => parseResult(raw, 'prevResult'), (e: unknown) => e instanceof CniError && e.code === 6 && text.test(e.message));
    bad('nope', /prevResult: must be a JSON object/);
    bad({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.1' }] }, /prevResult.ips\[0\].address: "10.0.0.1" is not a CIDR/);
    bad({ cniVersion: '1.0.0', routes: [{ dst: '0.0.0.0/0', gw: 'x' }] }, /prevResult.routes\[0\].gw: "x" is not an IP address/);
    bad({ cniVersion: '0.2.0', ip4: { ip: 'bad' } }, /prevResult.ip4.ip/);
    bad({ cniVersion: 'new', ips: [] }, /cniVersion "new" is not a version/);
    bad({ cniVersion: '1.0.0', interfaces: [{ mac: 'x' }] }, /interfaces\[0\]: needs a name/);
  });
});

describe('CNI_ARGS', () => {
  it('parses K=V pairs, values may contain "="', () => {
    assert.deepEqual([...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=web;X=a=b')], [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'web'], ['X', 'a=b']]);
    assert.deepEqual([...parseCniArgs('')], []);
  });
  it('refuses a pair without "=" (code 4)', () => {
    assert.throws(() => parseCniArgs('A=1;B'), (e: unknown) => e instanceof CniError && e.code === 4 && /invalid pair "B"/.test(e.message));
  });
  it('refuses unknown keys unless IgnoreUnknown is 1 or true', () => {
    assert.throws(() => checkKnownArgs(parseCniArgs('IP=10.0.0.1;FOO=1'), ['IP']), /unknown key "FOO" \(known: IP; add IgnoreUnknown=1 to allow others\)/);
    checkKnownArgs(parseCniArgs('IgnoreUnknown=1;FOO=1'), ['IP']);
    checkKnownArgs(parseCniArgs('IgnoreUnknown=true;FOO=1'), ['IP']);
    assert.throws(() => checkKnownArgs(parseCniArgs('IgnoreUnknown=0;FOO=1'), ['IP']), /unknown key/);
  });
});
