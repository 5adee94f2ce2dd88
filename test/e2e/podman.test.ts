// A real container runtime: podman (Debian's, CNI backend) runs a busybox
// container through twill's installed binaries with kube-flannel's conflist,
// inside a test node namespace. Nothing of the host's is used: podman's storage,
// CNI config and plugin dirs are temporary, and its CNI cache (libcni's fixed
// /var/lib/cni) lives on a tmpfs in a private mount namespace.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson, run } from '../support/exec.js';
import { writeSubnetEnv } from '../../src/subnet/subnet-env.js';

const BIN_TWILL = fileURLToPath(new URL('../../../bin/twill', import.meta.url));

function requireTool(path: string, pkg: string): void {
  if (!existsSync(path)) throw new Error(`${path} is missing: apt-get install ${pkg} (.ci/run does)`);
}

/** One shell in the node's network namespace and a private mount namespace, fed commands one by one. */
class Session {
  private readonly sh: ChildProcessWithoutNullStreams;
  private buffer = '';
  private n = 0;

  constructor(netnsPath: string, env: Record<string, string>) {
    this.sh = spawn('nsenter', [`--net=${netnsPath}`, '--', 'unshare', '--mount', '--propagation', 'private', 'sh'], { env: { ...process.env, ...env } });
    this.sh.stdout.on('data', (d: Buffer) => (this.buffer += d.toString()));
    this.sh.stderr.on('data', (d: Buffer) => (this.buffer += d.toString()));
  }

  /** Runs cmd; resolves with its output, rejects with it when the exit status is not 0. */
  run(cmd: string, timeoutMs = 60_000): Promise<string> {
    const tag = `__twill_done_${this.n++}__`;
    this.buffer = '';
    this.sh.stdin.write(`${cmd} 2>&1; echo "${tag} $?"\n`);
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const poll = setInterval(() => {
        const m = new RegExp(`${tag} (\\d+)`).exec(this.buffer);
        if (m) {
          clearInterval(poll);
          const out = this.buffer.slice(0, m.index);
          if (m[1] === '0') resolve(out);
          else reject(new Error(`${cmd} failed (${m[1]}): ${out}`));
        } else if (Date.now() - started > timeoutMs) {
          clearInterval(poll);
          reject(new Error(`${cmd} timed out: ${this.buffer}`));
        }
      }, 20);
    });
  }

  close(): void {
    this.sh.stdin.end('exit\n');
  }
}

describe('podman runs a container through twill\'s plugins (kube-flannel conflist)', () => {
  const hosts = new TestHosts();
  let node: TestHost;
  let client: TestHost;
  let dir: string;
  let session: Session;
  let podman: string;
  before(async () => {
    requireTool('/usr/bin/podman', 'podman');
    requireTool('/usr/sbin/runc', 'runc');
    requireTool('/usr/bin/busybox', 'busybox-static');
    const { hosts: n } = await hosts.underlay({ node: '198.18.2.1/24', client: '198.18.2.2/24' });
    node = n.node!;
    client = n.client!;
    dir = mkdtempSync(join(tmpdir(), 'twill-podman-'));
    for (const d of ['cni', 'conf', 'data', 'root', 'run', 'rootfs/bin']) mkdirSync(join(dir, d), { recursive: true });
    execFileSync(BIN_TWILL, ['cni', 'install', '--dir', join(dir, 'cni')], { stdio: 'ignore' });
    copyFileSync('/usr/bin/busybox', join(dir, 'rootfs/bin/busybox'));
    chmodSync(join(dir, 'rootfs/bin/busybox'), 0o755);
    for (const c of ['sh', 'httpd', 'nc', 'ip', 'sleep', 'cat', 'echo', 'printf']) symlinkSync('busybox', join(dir, 'rootfs/bin', c));
    mkdirSync(join(dir, 'rootfs/www'));
    writeFileSync(join(dir, 'rootfs/www/index.html'), 'hello from a twill pod\n');
    execFileSync('tar', ['-C', join(dir, 'rootfs'), '-cf', join(dir, 'busybox.tar'), '.']);
    writeSubnetEnv(join(dir, 'subnet.env'), { networks: ['10.244.0.0/16'], subnet: '10.244.1.1/24', ipv6Networks: [], ipv6Subnet: null, mtu: 1450, ipMasq: true });
    writeFileSync(join(dir, 'conf/10-flannel.conflist'), JSON.stringify({
      name: 'cbr0', cniVersion: '0.3.1',
      plugins: [
        { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true }, subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'data/flannel'), ipam: { dataDir: join(dir, 'data/ipam') } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }));
    writeFileSync(join(dir, 'containers.conf'), [
      '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${join(dir, 'cni')}"]`, `network_config_dir = "${join(dir, 'conf')}"`, 'default_network = "cbr0"',
      '[engine]', 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `events_logfile_path = "${join(dir, 'run/events.log')}"`, '',
    ].join('\n'));
    podman = `podman --root ${join(dir, 'root')} --runroot ${join(dir, 'run')} --storage-driver vfs`;
    // TWILL_NATIVE_DIR: where the installed binary unpacks its addons (podman passes its environment to plugins), not the host's /var/lib/twill.
    session = new Session(node.netns.path, { CONTAINERS_CONF: join(dir, 'containers.conf'), TMPDIR: join(dir, 'run'), TWILL_NATIVE_DIR: join(dir, 'native') });
    // libcni's cache is always /var/lib/cni: give it a tmpfs of its own in this mount namespace.
    await session.run('mount -t tmpfs twill-var-lib /var/lib');
    await session.run(`${podman} import ${join(dir, 'busybox.tar')} localhost/busybox:twill`);
  });
  after(async () => {
    try {
      await session?.run(`${podman} rm -f -t 0 -a`).catch(() => undefined);
      session?.close();
    } finally {
      await hosts.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  let podIp = '';

  it('runs the container: an IP in FLANNEL_SUBNET with MTU FLANNEL_MTU', async () => {
    await session.run(`${podman} run -d --name web --network cbr0 -p 8080:80 --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/busybox:twill httpd -f -p 80 -h /www`);
    const inside = await session.run(`${podman} exec web ip -o -4 addr show dev eth0`);
    const m = /inet (10\.244\.1\.\d+)\/24/.exec(inside);
    assert.ok(m, inside);
    podIp = m[1]!;
    assert.match(await session.run(`${podman} exec web cat /sys/class/net/eth0/mtu`), /^1450\s*$/);
  });

  // curl from the namespaces; busybox's static wget crashes on this machine (glibc NSS in a static binary).
  const get = (h: TestHost, url: string) => run('ip', ['netns', 'exec', h.name, 'curl', '-sS', '-m', '3', url]);

  it('is reachable at the pod IP from the node, at the node\'s address on the hostPort from outside, and at 127.0.0.1 on the node', async () => {
    requireTool('/usr/bin/curl', 'curl');
    assert.match(await get(node, `http://${podIp}/`), /hello from a twill pod/);
    assert.match(await get(client, 'http://198.18.2.1:8080/'), /hello from a twill pod/);
    assert.match(await get(node, 'http://127.0.0.1:8080/'), /hello from a twill pod/);
  });

  it('reaches its own hostPort (hairpin)', async () => {
    const reply = await session.run(`${podman} exec web sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 198.18.2.1 8080"`);
    assert.match(reply, /hello from a twill pod/);
  });

  it('after podman rm: no IP, veth, delegate file or rule is left', async () => {
    await session.run(`${podman} rm -f -t 0 web`);
    const ipam = join(dir, 'data/ipam/cbr0');
    assert.deepEqual(existsSync(ipam) ? readdirSync(ipam).filter((f) => f.startsWith('10.')) : [], []);
    assert.deepEqual(existsSync(join(dir, 'data/flannel')) ? readdirSync(join(dir, 'data/flannel')) : [], []);
    const links = await ipJson<{ ifname: string; master?: string }[]>(node.name, ['link', 'show']);
    assert.equal(links.filter((l) => l.master === 'cni0').length, 0, 'no veth on cni0');
    const nat = await run('ip', ['netns', 'exec', node.name, 'iptables-save', '-t', 'nat']);
    assert.doesNotMatch(nat, /CNI-DN-|-j CNI-[0-9a-f]{24}/, 'no per-container chains');
  });
});
