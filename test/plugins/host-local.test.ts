import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { REFERENCE_DEBIAN, REFERENCE_V1_10, requireReference, runPlugin, twillPluginDir, type CniEnv } from '../support/cni.js';

describe('host-local', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let plugins: ReturnType<typeof twillPluginDir>;
  let data: string;
  let twill: string;
  before(async () => {
    host = await hosts.host('hl');
    plugins = twillPluginDir();
    twill = join(plugins.dir, 'host-local');
    data = mkdtempSync(join(tmpdir(), 'twill-hl-'));
  });
  after(async () => {
    plugins.remove();
    rmSync(data, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const conf = (name: string, ipam: Record<string, unknown>, version = '1.0.0') => ({ cniVersion: version, name, type: 'host-local', ipam: { type: 'host-local', dataDir: data, ...ipam } });
  const env = (command: string, containerId: string, extra: Partial<CniEnv> = {}): CniEnv => ({ command, containerId, netns: '/run/netns/none', ifname: 'eth0', path: plugins.dir, ...extra });
  const files = (net: string) => readdirSync(join(data, net)).sort();

  it('allocates round-robin, writes the reference\'s files byte for byte, and releases by container + ifname', async () => {
    const c = conf('rr', { subnet: '10.10.0.0/29', routes: [{ dst: '0.0.0.0/0' }] });
    const a = await runPlugin(host.name, twill, env('ADD', 'ctr-a'), c);
    assert.equal(a.code, 0, a.stdout);
    assert.deepEqual(a.json, { cniVersion: '1.0.0', ips: [{ address: '10.10.0.2/29', gateway: '10.10.0.1' }], routes: [{ dst: '0.0.0.0/0' }] });
    assert.equal(readFileSync(join(data, 'rr', '10.10.0.2'), 'utf8'), 'ctr-a\r\neth0');
    assert.equal(readFileSync(join(data, 'rr', 'last_reserved_ip.0'), 'utf8'), '10.10.0.2');
    const b = await runPlugin(host.name, twill, env('ADD', 'ctr-b'), c);
    assert.equal((b.json?.ips as { address: string }[])[0]!.address, '10.10.0.3/29');
    // Releasing a does not move the cursor back: the next one is .4.
    assert.equal((await runPlugin(host.name, twill, env('DEL', 'ctr-a'), c)).code, 0);
    const d = await runPlugin(host.name, twill, env('ADD', 'ctr-d'), c);
    assert.equal((d.json?.ips as { address: string }[])[0]!.address, '10.10.0.4/29');
    assert.deepEqual(files('rr'), ['10.10.0.3', '10.10.0.4', 'last_reserved_ip.0', 'lock']);
    // DEL of something unknown, and DEL twice, succeed.
    assert.equal((await runPlugin(host.name, twill, env('DEL', 'never-added'), c)).code, 0);
    assert.equal((await runPlugin(host.name, twill, env('DEL', 'ctr-d'), c)).code, 0);
    assert.equal((await runPlugin(host.name, twill, env('DEL', 'ctr-d'), c)).code, 0);
  });

  it('wraps around, skips the gateway, and reports exhaustion as the reference does', async () => {
    const c = conf('wrap', { ranges: [[{ subnet: '10.11.0.0/29', rangeStart: '10.11.0.1', rangeEnd: '10.11.0.3' }]] });
    const got: string[] = [];
    for (const id of ['w1', 'w2']) got.push(((await runPlugin(host.name, twill, env('ADD', id), c)).json?.ips as { address: string }[])[0]!.address);
    assert.deepEqual(got, ['10.11.0.2/29', '10.11.0.3/29'], '.1 is the gateway');
    const full = await runPlugin(host.name, twill, env('ADD', 'w3'), c);
    assert.equal(full.code, 1);
    assert.equal(full.json?.code, 999);
    assert.equal(full.json?.msg, 'failed to allocate for range 0: no IP addresses available in range set: 10.11.0.1-10.11.0.3');
    await runPlugin(host.name, twill, env('DEL', 'w1'), c);
    const again = await runPlugin(host.name, twill, env('ADD', 'w3'), c);
    assert.equal((again.json?.ips as { address: string }[])[0]!.address, '10.11.0.2/29', 'wrapped around to the freed one');
  });

  it('allocates one address per range set (dual stack), and gives 0.2.0 results the ip4/ip6 shape', async () => {
    const c = conf('dual', { ranges: [[{ subnet: '10.12.0.0/24' }], [{ subnet: 'fd12::/64' }]] }, '0.3.1');
    const r = await runPlugin(host.name, twill, env('ADD', 'ds'), c);
    assert.deepEqual(r.json?.ips, [
      { version: '4', address: '10.12.0.2/24', gateway: '10.12.0.1' },
      { version: '6', address: 'fd12::2/64', gateway: 'fd12::1' },
    ]);
    const old = await runPlugin(host.name, twill, env('ADD', 'ds-old'), conf('dual', { ranges: [[{ subnet: '10.12.0.0/24' }]] }, '0.2.0'));
    assert.deepEqual(old.json, { cniVersion: '0.2.0', ip4: { ip: '10.12.0.3/24', gateway: '10.12.0.1' }, dns: {} });
  });

  it('honours requested IPs from CNI_ARGS, args.cni.ips and runtimeConfig.ips', async () => {
    const c = conf('req', { subnet: '10.13.0.0/24' });
    const viaEnv = await runPlugin(host.name, twill, env('ADD', 'r1', { args: 'IP=10.13.0.77' }), c);
    assert.equal((viaEnv.json?.ips as { address: string }[])[0]!.address, '10.13.0.77/24');
    const viaArgs = await runPlugin(host.name, twill, env('ADD', 'r2'), { ...c, args: { cni: { ips: ['10.13.0.78'] } } });
    assert.equal((viaArgs.json?.ips as { address: string }[])[0]!.address, '10.13.0.78/24');
    const viaRuntime = await runPlugin(host.name, twill, env('ADD', 'r3'), { ...c, runtimeConfig: { ips: ['10.13.0.79/24'] } });
    assert.equal((viaRuntime.json?.ips as { address: string }[])[0]!.address, '10.13.0.79/24');
    const taken = await runPlugin(host.name, twill, env('ADD', 'r4', { args: 'IP=10.13.0.77' }), c);
    assert.equal(taken.code, 1);
    assert.match(String(taken.json?.msg), /requested IP address 10\.13\.0\.77 is not available in range set 10\.13\.0\.1-10\.13\.0\.254/);
    const outside = await runPlugin(host.name, twill, env('ADD', 'r5', { args: 'IP=10.99.0.1' }), c);
    assert.match(String(outside.json?.msg), /failed to allocate all requested IPs: 10\.99\.0\.1/);
    assert.ok(!files('req').some((f) => f.startsWith('10.13.0.') && !['10.13.0.77', '10.13.0.78', '10.13.0.79'].includes(f)), 'a failed ADD keeps nothing');
    const unknownArg = await runPlugin(host.name, twill, env('ADD', 'r6', { args: 'FOO=bar' }), c);
    assert.equal(unknownArg.json?.code, 4);
    assert.match(String(unknownArg.json?.msg), /unknown key "FOO"/);
    const ignored = await runPlugin(host.name, twill, env('ADD', 'r6', { args: 'IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=default' }), c);
    assert.equal(ignored.code, 0, ignored.stdout);
  });

  it('refuses a second allocation for the same container and interface', async () => {
    const c = conf('dup', { subnet: '10.14.0.0/24' });
    assert.equal((await runPlugin(host.name, twill, env('ADD', 'dupe'), c)).code, 0);
    const again = await runPlugin(host.name, twill, env('ADD', 'dupe'), c);
    assert.equal(again.code, 1);
    assert.equal(again.json?.msg, 'failed to allocate for range 0: 10.14.0.2 has been allocated to dupe, duplicate allocation is not allowed');
    const otherIf = await runPlugin(host.name, twill, env('ADD', 'dupe', { ifname: 'net1' }), c);
    assert.equal(otherIf.code, 0, 'another interface of the same container is another attachment');
  });

  it('CHECK finds the allocation or says it is missing', async () => {
    const c = conf('chk', { subnet: '10.15.0.0/24' });
    await runPlugin(host.name, twill, env('ADD', 'ck'), c);
    assert.equal((await runPlugin(host.name, twill, env('CHECK', 'ck'), c)).code, 0);
    const missing = await runPlugin(host.name, twill, env('CHECK', 'nope'), c);
    assert.equal(missing.code, 1);
    assert.match(String(missing.json?.msg), /failed to find an address of container nope/);
    const old = await runPlugin(host.name, twill, env('CHECK', 'ck'), { ...c, cniVersion: '0.3.1' });
    assert.equal(old.json?.code, 1, 'CHECK needs 0.4.0');
  });

  it('GC releases what the runtime no longer lists, and nothing else', async () => {
    const c = conf('gc', { subnet: '10.16.0.0/24' }, '1.1.0');
    for (const id of ['keep1', 'drop1', 'keep2', 'drop2']) await runPlugin(host.name, twill, env('ADD', id), c);
    const gc = await runPlugin(host.name, twill, { command: 'GC', path: plugins.dir }, { ...c, 'cni.dev/valid-attachments': [{ containerID: 'keep1', ifname: 'eth0' }, { containerID: 'keep2', ifname: 'eth0' }] });
    assert.equal(gc.code, 0, gc.stdout);
    const owners = files('gc').filter((f) => f.startsWith('10.')).map((f) => readFileSync(join(data, 'gc', f), 'utf8').split('\r\n')[0]).sort();
    assert.deepEqual(owners, ['keep1', 'keep2']);
    const old = await runPlugin(host.name, twill, { command: 'GC', path: plugins.dir }, { ...c, cniVersion: '1.0.0' });
    assert.equal(old.json?.code, 1, 'GC needs 1.1.0');
  });

  describe('next to the reference plugin, on one data dir', () => {
    for (const [label, dir] of [['v1.10.0', REFERENCE_V1_10], ['Debian 1.1.1', REFERENCE_DEBIAN]] as const) {
      it(`allocate with one, release with the other (${label})`, async () => {
        const ref = join(requireReference(dir), 'host-local');
        const c = conf(`mix${label.replace(/\W/g, '')}`, { subnet: '10.17.0.0/24' });
        const byRef = await runPlugin(host.name, ref, env('ADD', 'by-ref'), c);
        assert.equal(byRef.code, 0, byRef.stdout);
        const byTwill = await runPlugin(host.name, twill, env('ADD', 'by-twill'), c);
        assert.equal((byTwill.json?.ips as { address: string }[])[0]!.address, '10.17.0.3/24', 'continues after the reference\'s last_reserved_ip');
        assert.equal((await runPlugin(host.name, twill, env('DEL', 'by-ref'), c)).code, 0);
        assert.equal((await runPlugin(host.name, ref, env('DEL', 'by-twill'), c)).code, 0);
        assert.deepEqual(files(c.name).filter((f) => f.startsWith('10.')), []);
      });
    }

    it('32 parallel ADDs split between twill and the reference never hand out an IP twice', async () => {
      const ref = join(requireReference(REFERENCE_V1_10), 'host-local');
      const c = conf('race', { subnet: '10.18.0.0/24' });
      const runs = await Promise.all(Array.from({ length: 32 }, (_, i) => runPlugin(host.name, i % 2 ? ref : twill, env('ADD', `race-${i}`), c)));
      for (const r of runs) assert.equal(r.code, 0, r.stdout + r.stderr);
      const ips = runs.map((r) => (r.json?.ips as { address: string }[])[0]!.address);
      assert.equal(new Set(ips).size, 32, `distinct: ${ips.join(' ')}`);
      assert.equal(files('race').filter((f) => f.startsWith('10.')).length, 32);
    });
  });

  it('waits for the store\'s lock (flock) while someone else holds it, then completes', async () => {
    const c = conf('locked', { subnet: '10.19.0.0/24' });
    await runPlugin(host.name, twill, env('ADD', 'first'), c); // creates the dir and lock file
    // Hold the lock from another process with flock(1), as the reference would.
    const lockPath = join(data, 'locked', 'lock');
    // -o: the lock stays with flock itself (not its child), so killing flock releases it.
    const holder = spawn('flock', ['-x', '-o', lockPath, 'sleep', '30'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 300));
      let done = false;
      const adding = runPlugin(host.name, twill, env('ADD', 'second'), c).then((r) => { done = true; return r; });
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(done, false, 'ADD must wait while the lock is held');
      assert.deepEqual(files('locked').filter((f) => f.startsWith('10.')), ['10.19.0.2']);
      holder.kill('SIGTERM');
      const r = await adding;
      assert.equal(r.code, 0, r.stdout);
      assert.equal((r.json?.ips as { address: string }[])[0]!.address, '10.19.0.3/24');
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('ignores files it does not own in the store (lock, last_reserved_ip, others)', async () => {
    const c = conf('foreign', { subnet: '10.20.0.0/24' });
    await runPlugin(host.name, twill, env('ADD', 'f1'), c);
    writeFileSync(join(data, 'foreign', 'README'), 'not an allocation');
    closeSync(openSync(join(data, 'foreign', 'notes.txt'), 'w'));
    assert.equal((await runPlugin(host.name, twill, env('DEL', 'f1'), c)).code, 0);
    assert.deepEqual(files('foreign'), ['README', 'last_reserved_ip.0', 'lock', 'notes.txt']);
  });
});
