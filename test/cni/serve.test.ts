// The warm path: plugin processes hand their calls to `twill cni serve` over a
// unix socket; the answers and the kernel state are those of a local call, and
// a call the server cannot take runs in the plugin process.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { BIN_TWILL } from '../support/agent.js';
import { ipJson } from '../support/exec.js';
import { runPlugin, runPluginIn, startCniServe, twillPluginDir, type CniEnv, type CniServeProcess, type PluginRun } from '../support/cni.js';
import { writeSubnetEnv } from '../../src/subnet/subnet-env.js';
import { DEFAULT_CNI_SOCKET, callerView, forwardRequest, viewMismatch, type CallerView } from '../../src/cni/forward.js';

const TWILL_VERSION = (JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as { version: string }).version;

const served = (r: PluginRun) => /twill-trace .*"server:ms"/.test(r.stderr);

describe('CNI warm path: twill cni serve', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let plugins: ReturnType<typeof twillPluginDir>;
  let tmp: string;
  let socket: string;
  let server: CniServeProcess;
  before(async () => {
    host = await hosts.host('sv');
    plugins = twillPluginDir();
    tmp = mkdtempSync(join(tmpdir(), 'twill-serve-'));
    socket = join(tmp, 'run', 'cni.sock');
    writeSubnetEnv(join(tmp, 'subnet.env'), { networks: ['10.244.0.0/16'], subnet: '10.244.1.1/24', ipv6Networks: [], ipv6Subnet: null, mtu: 1450, ipMasq: true });
    server = await startCniServe(host, socket);
  });
  after(async () => {
    await server?.stop();
    plugins.remove();
    rmSync(tmp, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const flannelConf = () => ({
    cniVersion: '0.4.0', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true },
    subnetFile: join(tmp, 'subnet.env'), dataDir: join(tmp, 'flannel'), ipam: { dataDir: join(tmp, 'ipam') },
  });
  const portmapConf = (prevResult: unknown) => ({
    cniVersion: '0.4.0', name: 'cbr0', type: 'portmap', capabilities: { portMappings: true }, backend: 'nftables',
    runtimeConfig: { portMappings: [{ hostPort: 30080, containerPort: 80, protocol: 'tcp' }] }, prevResult,
  });
  const env = (command: string, pod: TestHost, id: string, sock = socket): CniEnv => ({
    command, containerId: id, netns: pod.netns.path, ifname: 'eth0', path: plugins.dir, args: 'IgnoreUnknown=1',
    extra: { TWILL_CNI_SOCKET: sock, TWILL_CNI_TRACE: '1' },
  });
  const plugin = (type: string) => join(plugins.dir, type);

  it('ADD, CHECK and DEL of kube-flannel\'s conflist are served, with the answers and kernel state of a local call', async () => {
    const pod = await hosts.host('sv1');
    const add = await runPluginIn(host, plugin('flannel'), env('ADD', pod, 'sa'), flannelConf());
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.ok(served(add), `flannel ADD was served: ${add.stderr}`);
    const result = add.json as { ips: { address: string; gateway: string }[]; interfaces: { name: string; sandbox?: string }[] };
    assert.deepEqual(result.ips.map((i) => [i.address, i.gateway]), [['10.244.1.2/24', '10.244.1.1']]);
    const [eth0] = await ipJson<{ mtu: number; addr_info: { family: string; local: string }[] }[]>(pod.name, ['addr', 'show', 'dev', 'eth0']);
    assert.equal(eth0!.mtu, 1450);
    assert.deepEqual(eth0!.addr_info.filter((a) => a.family === 'inet').map((a) => a.local), ['10.244.1.2']);
    assert.equal(statSync(join(tmp, 'flannel', 'sa')).mode & 0o777, 0o600, 'the delegate config is saved 0600');

    const pm = await runPluginIn(host, plugin('portmap'), env('ADD', pod, 'sa'), portmapConf(add.json));
    assert.equal(pm.code, 0, pm.stdout + pm.stderr);
    assert.ok(served(pm), 'portmap ADD was served');
    assert.deepEqual(pm.json, add.json, 'portmap passes the result on');
    assert.match(await host.exec('nft', ['list', 'table', 'ip', 'cni_hostport']), /tcp dport 30080 dnat to 10\.244\.1\.2:80/);

    const check = await runPluginIn(host, plugin('flannel'), env('CHECK', pod, 'sa'), { ...flannelConf(), prevResult: add.json });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.ok(served(check));

    for (const [type, conf] of [['portmap', portmapConf(add.json)], ['flannel', flannelConf()]] as const) {
      const del = await runPluginIn(host, plugin(type), env('DEL', pod, 'sa'), conf);
      assert.equal(del.code, 0, del.stdout + del.stderr);
      assert.ok(served(del), `${type} DEL was served`);
    }
    assert.doesNotMatch(await host.exec('nft', ['list', 'table', 'ip', 'cni_hostport']), /30080/);
    assert.deepEqual(await ipJson(pod.name, ['link', 'show', 'eth0']).catch(() => []), []);
    assert.equal(existsSync(join(tmp, 'flannel', 'sa')), false, 'the delegate config is removed');
    assert.deepEqual(readdirSync(join(tmp, 'ipam', 'cbr0')).filter((f) => /^\d/.test(f)), [], 'the IP is released');
    assert.match(server.log(), /"plugin":"flannel","command":"ADD","containerId":"sa".*"msg":"CNI call served"/);
  });

  it('an error is the one the plugin process would print: same JSON, same exit status', async () => {
    const pod = await hosts.host('sv2');
    const bad = { ...flannelConf(), delegate: { name: 'x' } };
    const remote = await runPluginIn(host, plugin('flannel'), env('ADD', pod, 'sb'), bad);
    const local = await runPluginIn(host, plugin('flannel'), env('ADD', pod, 'sb', 'off'), bad);
    assert.ok(served(remote));
    assert.ok(!served(local));
    assert.equal(remote.code, 1);
    assert.equal(remote.code, local.code);
    assert.equal(remote.stdout, local.stdout);
    assert.equal((remote.json as { code: number }).code, 7);
    assert.match(server.log(), /"containerId":"sb".*"msg":"CNI call failed"/);
  });

  it('parallel ADDs are served at once, each its own address, and their DELs leave nothing', async () => {
    const pods = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => hosts.host(`svp${i}`)));
    const adds = await Promise.all(pods.map((p, i) => runPluginIn(host, plugin('flannel'), env('ADD', p, `par${i}`), flannelConf())));
    for (const a of adds) {
      assert.equal(a.code, 0, a.stdout + a.stderr);
      assert.ok(served(a));
    }
    const ips = adds.map((a) => (a.json as { ips: { address: string }[] }).ips[0]!.address);
    assert.equal(new Set(ips).size, ips.length, `distinct: ${ips.join(' ')}`);
    const dels = await Promise.all(pods.map((p, i) => runPluginIn(host, plugin('flannel'), env('DEL', p, `par${i}`), flannelConf())));
    for (const d of dels) assert.equal(d.code, 0, d.stdout + d.stderr);
    assert.deepEqual(readdirSync(join(tmp, 'ipam', 'cbr0')).filter((f) => /^\d/.test(f)), []);
  });

  it('a DEL that arrives while its container\'s ADD runs waits for it: nothing is left', async () => {
    // As a runtime that gave up on a slow ADD (and killed its plugin) and sends DEL at once.
    const pod = await hosts.host('sv9');
    const caller = host.netns.run(() => callerView(TWILL_VERSION));
    const envOf = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'sq', CNI_NETNS: pod.netns.path, CNI_IFNAME: 'eth0', CNI_PATH: plugins.dir, CNI_ARGS: 'IgnoreUnknown=1' });
    const send = (command: string) =>
      new Promise<{ served: boolean; code?: number; stdout?: string }>((resolve, reject) => {
        const conn = createConnection(socket);
        let text = '';
        conn.on('data', (d: Buffer) => (text += d.toString()));
        conn.on('end', () => resolve(JSON.parse(text) as { served: boolean }));
        conn.on('error', reject);
        conn.end(`${JSON.stringify(forwardRequest('flannel', envOf(command), Buffer.from(JSON.stringify(flannelConf())), caller))}\n`);
      });
    const add = send('ADD');
    const del = send('DEL');
    const [a, d] = await Promise.all([add, del]);
    assert.equal(a.served, true, JSON.stringify(a));
    assert.equal(a.code, 0, a.stdout);
    assert.equal(d.code, 0, d.stdout);
    assert.deepEqual(await ipJson(pod.name, ['link', 'show', 'eth0']).catch(() => []), [], 'the DEL ran after the ADD');
    assert.equal(existsSync(join(tmp, 'flannel', 'sq')), false);
    assert.deepEqual(readdirSync(join(tmp, 'ipam', 'cbr0')).filter((f) => /^\d/.test(f)), []);
  });

  it('does not leak: its open files stay the same over twenty ADD and DEL calls', async () => {
    const fds = () => readdirSync(`/proc/${server.child.pid}/fd`).length;
    const pod = await hosts.host('sv3');
    const cycle = async (i: number) => {
      for (const command of ['ADD', 'DEL']) {
        const r = await runPluginIn(host, plugin('flannel'), env(command, pod, `leak${i}`), flannelConf());
        assert.equal(r.code, 0, r.stdout + r.stderr);
      }
    };
    await cycle(0);
    const before = fds();
    for (let i = 1; i <= 20; i++) await cycle(i);
    assert.ok(fds() <= before + 2, `open files: ${before} before, ${fds()} after`);
  });

  it('a caller in another network namespace runs the call itself, and says why', async () => {
    const other = await hosts.host('sv4');
    const pod = await hosts.host('sv5');
    const r = await runPluginIn(other, plugin('flannel'), env('ADD', pod, 'sc'), { ...flannelConf(), dataDir: join(tmp, 'flannel-other'), ipam: { dataDir: join(tmp, 'ipam-other') } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(!served(r));
    assert.match(r.stderr, /did not take the call \(the caller is in another network namespace\); running it here/);
    assert.match(server.log(), /"containerId":"sc".*"reason":"the caller is in another network namespace".*"msg":"CNI call refused: the plugin runs it itself"/);
    // Done in the caller's namespace: cni0 there, not in the server's.
    assert.equal((await ipJson(other.name, ['link', 'show', 'cni0'])).length, 1);
  });

  it('a caller in another mount namespace (ip netns exec makes one) runs the call itself', async () => {
    const pod = await hosts.host('sv8');
    const conf = { ...flannelConf(), dataDir: join(tmp, 'flannel-mnt'), ipam: { dataDir: join(tmp, 'ipam-mnt') } };
    const r = await runPlugin(host.name, plugin('flannel'), env('ADD', pod, 'sf'), conf);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(!served(r));
    assert.match(r.stderr, /did not take the call \(the caller is in another mount namespace/);
    assert.equal((await runPlugin(host.name, plugin('flannel'), env('DEL', pod, 'sf'), conf)).code, 0);
  });

  it('no server at the socket: the plugin runs the call itself, quietly', async () => {
    const pod = await hosts.host('sv6');
    const r = await runPluginIn(host, plugin('flannel'), env('ADD', pod, 'sd', join(tmp, 'none.sock')), flannelConf());
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(!served(r));
    assert.doesNotMatch(r.stderr, /did not take/);
    const del = await runPluginIn(host, plugin('flannel'), env('DEL', pod, 'sd', join(tmp, 'none.sock')), flannelConf());
    assert.equal(del.code, 0);
  });

  it('a call the server took and lost is an error the runtime retries (code 11), not run twice', async () => {
    const lossy = join(tmp, 'lossy.sock');
    const s = host.netns.run(() => createServer({ allowHalfOpen: true }, (c) => c.on('data', () => c.destroy())));
    await new Promise<void>((resolve) => s.listen(lossy, resolve));
    try {
      const pod = await hosts.host('sv7');
      const r = await runPluginIn(host, plugin('flannel'), env('ADD', pod, 'se', lossy), flannelConf());
      assert.equal(r.code, 1);
      const e = r.json as { code: number; msg: string };
      assert.equal(e.code, 11);
      assert.match(e.msg, /lost the CNI ADD call handed to the twill server at .*lossy\.sock/);
      assert.equal(existsSync(join(tmp, 'flannel', 'se')), false, 'the plugin did not run it as well');
    } finally {
      await new Promise((resolve) => s.close(resolve));
    }
  });

  it('a second server on a live socket is refused; a socket file left by a crash is taken over', async () => {
    const second = spawnSync(process.execPath, [BIN_TWILL, 'cni', 'serve', '--socket', socket], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(second.status, 1, second.stderr);
    assert.match(second.stderr, /twill cni serve: another server is serving CNI calls at .*cni\.sock/);
    assert.doesNotMatch(server.log(), /bad CNI request/, 'its check of the live server is not a call');
    const stale = join(tmp, 'stale.sock');
    const crashed = await startCniServe(host, stale);
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    assert.ok(existsSync(stale), 'a killed server leaves its socket file');
    const taker = await startCniServe(host, stale);
    try {
      assert.ok(statSync(stale).isSocket());
      assert.equal(statSync(stale).mode & 0o777, 0o600, 'only root may hand calls over');
      assert.deepEqual(readdirSync(tmp).filter((f) => f.startsWith('.stale.sock')), [], 'the temporary name was renamed into place');
    } finally {
      assert.equal(await taker.stop(), 0);
    }
    assert.equal(existsSync(stale), false, 'SIGTERM removes the socket');
  });
});

describe('CNI warm path: deploy/twill-cni.service', () => {
  it('serves on the socket plugins look for by default, unsandboxed (a private mount namespace is never served)', () => {
    const unit = readFileSync(fileURLToPath(new URL('../../../deploy/twill-cni.service', import.meta.url)), 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1]?.split(/\s+/);
    assert.deepEqual(exec, ['/usr/local/bin/twill', 'cni', 'serve', '--socket', DEFAULT_CNI_SOCKET]);
    for (const key of ['ProtectSystem', 'PrivateTmp', 'ProtectHome', 'ReadWritePaths', 'PrivateMounts', 'RootDirectory']) {
      assert.doesNotMatch(unit, new RegExp(`^${key}=`, 'm'), `${key} would give the server a mount namespace of its own`);
    }
  });
});

describe('CNI warm path: who is served', () => {
  const own: CallerView = { mountNs: '4:1', netNs: '4:2', cwd: '/', twill: '0.1.0', executables: [] };
  it('only a caller with the same mount and network namespace, cwd and twill version', () => {
    assert.equal(viewMismatch(own, { ...own, executables: ['1:2'] }), null);
    assert.match(viewMismatch(own, { ...own, twill: '0.2.0' })!, /twill 0\.2\.0, the server twill 0\.1\.0/);
    assert.match(viewMismatch(own, { ...own, mountNs: '4:9' })!, /another mount namespace/);
    assert.match(viewMismatch(own, { ...own, netNs: '4:9' })!, /another network namespace/);
    assert.match(viewMismatch(own, { ...own, cwd: '/tmp' })!, /runs in \/tmp, the server in \//);
  });
});
