// `twill cni install`: the single executable laid out as the CNI plugins, run as
// a runtime runs them (real processes, real namespaces), with no Node around.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.js';
import { PLUGIN_TYPES } from '../../src/plugins/registry.js';
import { ipJson } from '../support/exec.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { REFERENCE_V1_10, requireReference, runPlugin, runPluginIn, startCniServe } from '../support/cni.js';

const BIN_TWILL = fileURLToPath(new URL('../../../bin/twill', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(file: string, args: string[], env: NodeJS.ProcessEnv = process.env, stdin = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code === 'string') reject(err);
      else resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin?.end(stdin);
  });
}

/** A command on PATH, as an absolute path (fails, never skips, when it is missing). */
function which(cmd: string): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, cmd);
    if (dir && existsSync(p)) return p;
  }
  throw new Error(`${cmd} is missing (.ci/run installs it)`);
}

describe('twill cni install', { timeout: 180_000 }, () => {
  const hosts = new TestHosts();
  let work: string;
  let dir: string; // installed without a prefix
  let prefixed: string; // installed with --prefix twill-
  let nodeless: string; // a PATH without node: only ip
  let nativeDir: string; // TWILL_NATIVE_DIR: where the executable writes its addons
  let data: string;
  let host: TestHost;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'twill-install-'));
    chmodSync(work, 0o755);
    dir = join(work, 'bin');
    prefixed = join(work, 'prefixed');
    nodeless = join(work, 'path');
    nativeDir = join(work, 'native');
    data = join(work, 'data');
    for (const d of [dir, prefixed, nodeless, data]) mkdirSync(d, { mode: 0o755 });
    symlinkSync(which('ip'), join(nodeless, 'ip'));
    host = await hosts.host('node');
  });
  after(async () => {
    await hosts.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  /** The environment a runtime gives a plugin: no node on PATH, our own addon cache. */
  const pluginEnv = (vars: Record<string, string> = {}): NodeJS.ProcessEnv => ({ PATH: nodeless, TWILL_NATIVE_DIR: nativeDir, ...vars });

  it('installs one executable under every plugin name (hard links) and says what it installed', { timeout: 180_000 }, async () => {
    // The first install in a checkout builds dist/sea/twill when it is missing or stale.
    const r = await exec(BIN_TWILL, ['cni', 'install', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^installed twill \\S+ CNI plugins into ${dir} `));
    const inodes = new Set<number>();
    for (const t of PLUGIN_TYPES) {
      const st = statSync(join(dir, t));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o777, 0o755);
      assert.equal(st.nlink, PLUGIN_TYPES.length);
      inodes.add(st.ino);
      assert.ok(r.stdout.includes(`  ${join(dir, t)}\n`), `stdout names ${t}`);
    }
    assert.equal(inodes.size, 1, 'one file');
    assert.deepEqual(readdirSync(dir).sort(), [...PLUGIN_TYPES].sort(), 'and no temporary file is left');
    assert.ok(statSync(join(dir, 'bridge')).size > 10e6, 'it is the single executable, not a script');
  });

  it('--prefix names them P<name>', async () => {
    const r = await exec(BIN_TWILL, ['cni', 'install', '--dir', prefixed, '--prefix', 'twill-']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(prefixed).sort(), PLUGIN_TYPES.map((t) => `twill-${t}`).sort());
    assert.equal(new Set(PLUGIN_TYPES.map((t) => statSync(join(prefixed, `twill-${t}`)).ino)).size, 1);
  });

  it('each installed name is its plugin: VERSION, and what it says run by hand (no node on PATH)', async () => {
    for (const [d, prefix] of [[dir, ''], [prefixed, 'twill-']] as const) {
      for (const t of PLUGIN_TYPES) {
        const exe = join(d, `${prefix}${t}`);
        const v = await exec(exe, [], pluginEnv({ CNI_COMMAND: 'VERSION' }), '{}');
        assert.equal(v.code, 0, v.stderr);
        assert.deepEqual(JSON.parse(v.stdout), { cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_VERSIONS] });
        const about = await exec(exe, [], pluginEnv());
        assert.equal(about.code, 0, about.stderr);
        assert.match(about.stderr, new RegExp(`^CNI plugin ${t} \\(twill `));
      }
    }
  });

  it('ADD and DEL of bridge with host-local through the installed plugins; host-local runs in-process', async () => {
    const strace = which('strace');
    const pod = await hosts.host('pod');
    const conf = {
      cniVersion: '1.0.0',
      name: 'podnet',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      ipam: { type: 'host-local', subnet: '10.244.3.0/24', dataDir: data },
    };
    const env = (command: string) => ({ command, containerId: 'c1', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: dir, extra: pluginEnv() });
    const add = await runPlugin(host.name, join(dir, 'bridge'), env('ADD'), conf);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual((add.json as { ips: unknown[] }).ips, [{ interface: 2, address: '10.244.3.2/24', gateway: '10.244.3.1' }]);
    const eth0 = (await ipJson<{ ifname: string; addr_info: { family: string; local: string }[] }[]>(pod.name, ['addr', 'show', 'eth0']))[0]!;
    assert.deepEqual(eth0.addr_info.filter((a) => a.family === 'inet').map((a) => a.local), ['10.244.3.2']);
    assert.ok(readdirSync(join(data, 'podnet')).includes('10.244.3.2'), 'host-local recorded the allocation');

    // DEL, traced: the only program started is the bridge plugin itself (host-local, the
    // same file, ran inside it).
    const trace = join(work, 'del.trace');
    const vars = { ...pluginEnv(), CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_NETNS: `/run/netns/${pod.name}`, CNI_IFNAME: 'eth0', CNI_PATH: dir };
    const del = await exec(strace, ['-f', '-qq', '-e', 'trace=execve', '-o', trace, which('ip'), 'netns', 'exec', host.name, join(dir, 'bridge')], vars, JSON.stringify(conf));
    assert.equal(del.code, 0, del.stdout + del.stderr);
    const execs = readFileSync(trace, 'utf8').split('\n').filter((l) => /execve\(/.test(l) && !/ENOENT/.test(l));
    assert.deepEqual(execs.map((l) => /execve\("([^"]+)"/.exec(l)?.[1]).slice(1), [join(dir, 'bridge')], execs.join('\n'));
    assert.ok(!readdirSync(join(data, 'podnet')).includes('10.244.3.2'), 'DEL released the IP');
    assert.equal((await ipJson(pod.name, ['link', 'show'])).some((l) => l.ifname === 'eth0'), false, 'and removed eth0');
  });

  it('the executable writes its native addons once, by SHA-256, and replaces a damaged one', async () => {
    // The ADD above wrote both addons.
    const written = readdirSync(nativeDir).flatMap((sha) => readdirSync(join(nativeDir, sha)).map((f) => ({ sha, f, path: join(nativeDir, sha, f) })));
    assert.deepEqual(written.map((w) => w.f).sort(), ['netlink.node', 'twill_netns.node']);
    for (const w of written) {
      assert.equal(createHash('sha256').update(readFileSync(w.path)).digest('hex'), w.sha);
      assert.equal(statSync(join(nativeDir, w.sha)).mode & 0o777, 0o700);
    }
    // Damage both (same size), then run a plugin that needs them: loopback in a new pod.
    for (const w of written) {
      const size = statSync(w.path).size;
      chmodSync(w.path, 0o600);
      writeFileSync(w.path, Buffer.alloc(size, 0x5a));
    }
    const pod = await hosts.host('pod-lo');
    const conf = { cniVersion: '1.0.0', name: 'lo', type: 'loopback' };
    const add = await runPlugin(host.name, join(dir, 'loopback'), { command: 'ADD', containerId: 'lo1', netns: `/run/netns/${pod.name}`, ifname: 'lo', path: dir, extra: pluginEnv() }, conf);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    for (const w of written) assert.equal(createHash('sha256').update(readFileSync(w.path)).digest('hex'), w.sha, `${w.f} rewritten`);
    assert.deepEqual(readdirSync(nativeDir).sort(), [...new Set(written.map((w) => w.sha))].sort(), 'and nothing else left there');
  });

  it('a delegate that is not twill\'s (the reference host-local first in CNI_PATH) runs as its own process', async () => {
    const ref = requireReference(REFERENCE_V1_10);
    const pod = await hosts.host('pod-ref');
    const conf = { cniVersion: '1.0.0', name: 'refnet', type: 'bridge', bridge: 'cni1', isGateway: true, ipam: { type: 'host-local', subnet: '10.244.4.0/24', dataDir: data } };
    const env = (command: string) => ({ command, containerId: 'r1', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: `${ref}:${dir}`, extra: pluginEnv() });
    const add = await runPlugin(host.name, join(dir, 'bridge'), env('ADD'), conf);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual((add.json as { ips: { address: string }[] }).ips.map((i) => i.address), ['10.244.4.2/24']);
    assert.ok(readdirSync(join(data, 'refnet')).includes('10.244.4.2'), 'the reference host-local recorded it');
    const del = await runPlugin(host.name, join(dir, 'bridge'), env('DEL'), conf);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.ok(!readdirSync(join(data, 'refnet')).includes('10.244.4.2'));
  });

  it('the installed plugin hands its call to a twill server in its namespace (the warm path)', async () => {
    const pod = await hosts.host('pod-sv');
    const socket = join(work, 'cni.sock');
    const server = await startCniServe(host, socket);
    try {
      const conf = { cniVersion: '1.0.0', name: 'svnet', type: 'bridge', bridge: 'cni2', isGateway: true, ipam: { type: 'host-local', subnet: '10.244.5.0/24', dataDir: data } };
      const env = (command: string) => ({ command, containerId: 's1', netns: `/run/netns/${pod.name}`, ifname: 'eth0', path: dir, extra: pluginEnv({ TWILL_CNI_SOCKET: socket, TWILL_CNI_TRACE: '1' }) });
      for (const command of ['ADD', 'DEL']) {
        const r = await runPluginIn(host, join(dir, 'bridge'), env(command), conf);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stderr, /twill-trace .*"server:ms"/, `${command} served`);
      }
      // The plugin's own executable is its delegate: host-local ran inside the server too.
      assert.match(server.log(), /"plugin":"bridge","command":"ADD","containerId":"s1".*"msg":"CNI call served"/);
      assert.deepEqual(readdirSync(join(data, 'svnet')).filter((f) => f.startsWith('10.')), []);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('re-installs over plugins that are running', async () => {
    const bridge = join(dir, 'bridge');
    const before = statSync(bridge).ino;
    // An ADD waits for its config on stdin: the binary stays busy until we send it.
    const running = spawn(bridge, [], { env: pluginEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c9', CNI_NETNS: '/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: dir }) });
    const out: Buffer[] = [];
    running.stdout.on('data', (d: Buffer) => out.push(d));
    const exited = new Promise<number | null>((resolve) => running.on('close', resolve));
    try {
      await new Promise((resolve) => running.on('spawn', resolve));
      assert.throws(() => closeSync(openSync(bridge, 'r+')), /ETXTBSY/, 'a running binary cannot be written to');

      // What an install killed half-way leaves (its process is gone): cleaned up.
      const gone = spawn('true');
      await new Promise((resolve) => gone.on('close', resolve));
      for (const f of [`.twill-cni.tmp.${gone.pid}`, `.bridge.tmp.${gone.pid}`]) writeFileSync(join(dir, f), 'partial');

      const r = await exec(BIN_TWILL, ['cni', 'install', '--dir', dir]);
      assert.equal(r.code, 0, r.stderr);
      assert.notEqual(statSync(bridge).ino, before, 'replaced by a new file');
      assert.deepEqual(readdirSync(dir).sort(), [...PLUGIN_TYPES].sort());

      running.stdin.end('not json');
      assert.equal(await exited, 1, 'the running plugin finished from its old file');
      const error = JSON.parse(Buffer.concat(out).toString()) as { code: unknown; msg: unknown };
      assert.ok(typeof error.code === 'number' && typeof error.msg === 'string', 'with a proper CNI error');
    } finally {
      // A failed assertion above must not leave the test waiting for this process.
      running.stdin.end();
      if (running.exitCode === null) running.kill();
      await exited;
    }
    const v = await exec(bridge, [], pluginEnv({ CNI_COMMAND: 'VERSION' }));
    assert.equal(v.code, 0, v.stderr);
  });

  it('the installed executable needs no node and no node_modules: a copy elsewhere installs itself', async () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'twill-sea-'));
    try {
      chmodSync(elsewhere, 0o755);
      copyFileSync(join(dir, 'bridge'), join(elsewhere, 'twill'));
      chmodSync(join(elsewhere, 'twill'), 0o755);
      assert.ok(!existsSync(join(elsewhere, 'node_modules')) && !elsewhere.startsWith(ROOT));
      const version = await exec(join(elsewhere, 'twill'), ['--version'], pluginEnv());
      assert.equal(version.code, 0, version.stderr);
      const target = join(elsewhere, 'cni');
      mkdirSync(target);
      const r = await exec(join(elsewhere, 'twill'), ['cni', 'install', '--dir', target, '--prefix', 'x-'], pluginEnv());
      assert.equal(r.code, 0, r.stderr);
      assert.equal(statSync(join(target, 'x-bridge')).size, statSync(join(elsewhere, 'twill')).size);
      const v = await exec(join(target, 'x-host-local'), [], pluginEnv({ CNI_COMMAND: 'VERSION' }));
      assert.equal(JSON.parse(v.stdout).cniVersion, '1.1.0');
      // A hard link named after a plugin, outside any install: still that plugin.
      linkSync(join(elsewhere, 'twill'), join(elsewhere, 'loopback'));
      const about = await exec(join(elsewhere, 'loopback'), [], pluginEnv());
      assert.match(about.stderr, /^CNI plugin loopback /);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it('refuses a bad --dir or --prefix, naming it, and writes nothing', async () => {
    const missing = join(work, 'no-such-dir');
    const r1 = await exec(BIN_TWILL, ['cni', 'install', '--dir', missing]);
    assert.notEqual(r1.code, 0);
    assert.ok(r1.stderr.includes(missing), r1.stderr);
    assert.match(r1.stderr, /no such directory/);

    const file = join(work, 'a-file');
    writeFileSync(file, '');
    const r2 = await exec(BIN_TWILL, ['cni', 'install', '--dir', file]);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, new RegExp(`${file}: not a directory`));

    // Not writable: the installed executable run as nobody, into a directory of root's.
    const twill = join(work, 'twill');
    linkSync(join(dir, 'bridge'), twill);
    const locked = join(work, 'locked');
    mkdirSync(locked, { mode: 0o755 });
    const r3 = await exec(which('setpriv'), ['--reuid=65534', '--regid=65534', '--clear-groups', twill, 'cni', 'install', '--dir', locked], pluginEnv());
    assert.notEqual(r3.code, 0);
    assert.match(r3.stderr, new RegExp(`${locked}: not writable`));
    assert.deepEqual(readdirSync(locked), []);

    const r4 = await exec(BIN_TWILL, ['cni', 'install', '--dir', prefixed, '--prefix', 'a/b']);
    assert.notEqual(r4.code, 0);
    assert.match(r4.stderr, /--prefix "a\/b": must not contain "\/"/);

    const r5 = await exec(BIN_TWILL, ['cni', 'install']);
    assert.notEqual(r5.code, 0);
    assert.match(r5.stderr, /required option '--dir <DIR>' not specified/);
  });

  it('--help says what it installs and how', async () => {
    const r = await exec(BIN_TWILL, ['cni', 'install', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: twill cni install \[options\]/);
    for (const t of PLUGIN_TYPES) assert.ok(r.stdout.includes(t), t);
    assert.match(r.stdout, /--dir <DIR>/);
    assert.match(r.stdout, /--prefix <P>/);
  });
});
