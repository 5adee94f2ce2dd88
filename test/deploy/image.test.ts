// The OCI image (scripts/build-image.sh): built with buildah, FROM scratch, into a
// container storage of the test's own (never the machine's /var/lib/containers),
// written to an OCI archive and loaded back with podman as a node would, then run
// with podman: the entrypoint, the tools the agent runs, and the DaemonSet's three
// containers of deploy/kube-twill.yml as the manifest gives them (command, volumes,
// capabilities), the agent up to "ready" in a network namespace of its own.
//
// Nothing of the machine's is used or left: podman's and buildah's storage, their
// network config dir (buildah looks for networks even FROM scratch), their
// runtime state and temporary files live in one temporary directory, and every
// podman and buildah command runs in a private mount namespace (unshare), so that
// the storage's mounts never reach the machine's and vanish with the command.
// Every container has `--network none` or its own namespace: the root network
// namespace is never touched.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'build-image.sh');
const MANIFEST = join(ROOT, 'deploy', 'kube-twill.yml');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE = `localhost/twill:${VERSION}`;
const SOURCE = 'https://example.invalid/twill.git';
const OVERLAYFS_MAGIC = 0x794c7630;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

interface Container {
  name: string;
  image: string;
  command: string[];
  env?: { name: string }[];
  securityContext?: { privileged?: boolean; capabilities?: { add?: string[] } };
  volumeMounts?: { name: string; mountPath: string }[];
  livenessProbe?: { httpGet: { path: string; port: number } };
  readinessProbe?: { httpGet: { path: string; port: number } };
}

interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
}

interface KubeObject {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: { template: { spec: { initContainers: Container[]; containers: Container[]; volumes: Volume[] } } };
}

interface ImageInspect {
  Id: string;
  Size: number;
  RepoTags: string[];
  RootFS: { Layers: string[] };
  Config: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; Labels?: Record<string, string> };
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

function requireTool(path: string, pkg: string): void {
  if (!existsSync(path)) throw new Error(`${path} is missing: apt-get install ${pkg} (.ci/run does)`);
}

/** Mount points at or below dir, deepest first, in this process's mount namespace. */
function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .reverse();
}

describe('the OCI image (scripts/build-image.sh), run by podman', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  let storage: string[] = [];
  let builtId = '';
  let buildSeconds = 0;
  const objects = (yaml.loadAll(readFileSync(MANIFEST, 'utf8')) as (KubeObject | null)[]).filter((o): o is KubeObject => o !== null);
  const daemonSet = objects.find((o) => o.kind === 'DaemonSet')!.spec!.template.spec;
  const configMap = objects.find((o) => o.kind === 'ConfigMap')!;

  /** podman with the test's storage, in a private mount namespace. */
  const podman = (args: string[], timeoutMs?: number) => exec('unshare', ['--mount', '--propagation', 'private', 'podman', ...storage, ...args], env, timeoutMs);
  const mustPodman = async (args: string[], timeoutMs?: number): Promise<string> => {
    const r = await podman(args, timeoutMs);
    if (r.code !== 0) throw new Error(`podman ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const inspect = async (): Promise<ImageInspect> => (JSON.parse(await mustPodman(['image', 'inspect', IMAGE])) as ImageInspect[])[0]!;

  /** The host side of a pod's volumes, as the kubelet would make them: hostPath below dir/host, a ConfigMap's data as files. */
  function volumeArgs(c: Container): string[] {
    return (c.volumeMounts ?? []).flatMap((m) => {
      const v = daemonSet.volumes.find((x) => x.name === m.name);
      assert.ok(v, `volume ${m.name} of container ${c.name} is not in the pod`);
      let source: string;
      if (v.hostPath) {
        source = join(dir, 'host', v.hostPath.path);
        if (v.hostPath.type === 'FileOrCreate') {
          mkdirSync(dirname(source), { recursive: true });
          if (!existsSync(source)) writeFileSync(source, '');
        } else {
          mkdirSync(source, { recursive: true });
        }
      } else if (v.configMap) {
        assert.equal(v.configMap.name, configMap.metadata.name);
        source = join(dir, 'configmap', v.configMap.name);
        mkdirSync(source, { recursive: true });
        for (const [file, text] of Object.entries(configMap.data ?? {})) writeFileSync(join(source, file), text);
      } else {
        throw new Error(`volume ${m.name}: the test knows hostPath and configMap volumes only`);
      }
      return ['--volume', `${source}:${m.mountPath}`];
    });
  }

  before(async () => {
    requireTool('/usr/bin/buildah', 'buildah');
    requireTool('/usr/bin/podman', 'podman');
    requireTool('/usr/sbin/runc', 'runc');
    requireTool('/usr/bin/curl', 'curl');
    dir = mkdtempSync(join(tmpdir(), 'twill-image-'));
    for (const d of ['tmp', 'net.d', 'cni-plugins', 'libpod']) mkdirSync(join(dir, d));
    // overlay is ~8 times quicker to start a container from than vfs (no copy of the
    // 120 MB layer), but cannot sit on an overlay file system (a machine that is itself a container).
    const driver = statfsSync(dir).type === OVERLAYFS_MAGIC ? 'vfs' : 'overlay';
    storage = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', driver];
    // The CNI backend, with its config dir here: netavark's would keep state in
    // /run/containers, and either backend's default dir is the machine's.
    writeFileSync(join(dir, 'containers.conf'), [
      '[containers]', 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
      '[network]', 'network_backend = "cni"', `network_config_dir = "${join(dir, 'net.d')}"`, `cni_plugin_dirs = ["${join(dir, 'cni-plugins')}"]`,
      '[engine]', 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "none"', `tmp_dir = "${join(dir, 'libpod')}"`, '',
    ].join('\n'));
    env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: dir, CONTAINERS_CONF: join(dir, 'containers.conf'), TMPDIR: join(dir, 'tmp') };

    const started = Date.now();
    const build = await exec('unshare', ['--mount', '--propagation', 'private', 'bash', SCRIPT, ...storage, '--oci-archive', join(dir, 'twill.tar'), '--source', SOURCE], env, 600_000);
    buildSeconds = (Date.now() - started) / 1000;
    if (build.code !== 0) throw new Error(`scripts/build-image.sh failed (exit ${build.code}):\n${build.stderr}`);
    builtId = build.stdout.trim();
    // As on a node: the image comes from the archive, not from the build's storage.
    await mustPodman(['rmi', IMAGE]);
    await mustPodman(['load', '--quiet', '--input', join(dir, 'twill.tar')], 300_000);
  });

  after(async () => {
    if (!dir) return;
    try {
      await podman(['rm', '--force', '--time', '0', '--all']);
    } finally {
      // Every podman and buildah ran in a private mount namespace: a mount here is a leak. Unmounted first, so rm never walks into one.
      const left = mountsBelow(dir);
      for (const m of left) await exec('umount', ['--lazy', m], env);
      rmSync(dir, { recursive: true, force: true });
      assert.deepEqual(left, [], 'mounts of the container storage reached the machine\'s mount namespace');
    }
  });

  it(`builds FROM scratch (one layer), with the ID the archive loads back as ${IMAGE}`, async () => {
    const image = await inspect();
    assert.match(builtId, /^[0-9a-f]{64}$/);
    assert.equal(image.Id, builtId, 'the archive holds the image the build made');
    assert.deepEqual(image.RepoTags, [IMAGE]);
    assert.equal(image.RootFS.Layers.length, 1, 'no base image: one layer');
    const names = (await mustPodman(['images', '--format', '{{.Repository}}:{{.Tag}}'])).trim().split('\n');
    assert.deepEqual(names, [IMAGE]);
    // The name in the archive, which `ctr images import` takes as it is (a full reference).
    const index = JSON.parse((await exec('tar', ['-xOf', join(dir, 'twill.tar'), 'index.json'], env)).stdout) as { manifests: { annotations?: Record<string, string> }[] };
    assert.deepEqual(index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']), [IMAGE]);
    console.log(`# image ${IMAGE}: ${(image.Size / 1e6).toFixed(1)} MB, built in ${buildSeconds.toFixed(1)} s`);
  });

  it('its config: the labels, ENTRYPOINT twill, and a PATH that finds what the manifest runs', async () => {
    const { Config: config } = await inspect();
    assert.deepEqual(config.Entrypoint, ['/usr/bin/twill']);
    assert.deepEqual(config.Cmd, ['--help']);
    const labels = config.Labels ?? {};
    assert.equal(labels['org.opencontainers.image.version'], VERSION);
    assert.equal(labels['org.opencontainers.image.title'], 'twill');
    assert.equal(labels['org.opencontainers.image.source'], SOURCE);
    assert.equal(labels['org.opencontainers.image.licenses'], 'Apache-2.0');
    assert.match(labels['org.opencontainers.image.revision'] ?? '', /^[0-9a-f]{40}(-dirty)?$/);
    const path = config.Env?.find((e) => e.startsWith('PATH='));
    assert.ok(path?.split(':').includes('/usr/bin') && path.split(':').includes('/usr/sbin'), String(path));
    // The DaemonSet's containers replace the entrypoint with their own command: its program must be on PATH.
    const programs = [...new Set([...daemonSet.initContainers, ...daemonSet.containers].map((c) => c.command[0]!))];
    assert.deepEqual(programs.sort(), ['sh', 'twill']);
    const found = await mustPodman(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', 'for c in "$@"; do command -v "$c" || echo "$c: missing"; done', 'sh', ...programs, 'cp', 'mv']);
    assert.deepEqual(found.trim().split('\n'), [...programs, 'cp', 'mv'].map((p) => `/usr/bin/${p}`));
  });

  it('twill --version (the entrypoint) prints the package\'s version; twill agent --help shows the agent\'s flags', async () => {
    assert.equal((await mustPodman(['run', '--rm', '--network', 'none', IMAGE, '--version'])).trim(), VERSION);
    const help = await mustPodman(['run', '--rm', '--network', 'none', IMAGE, 'agent', '--help']);
    assert.match(help, /^Usage: twill agent \[options\]/);
    assert.match(help, /--store <SPEC>/);
    assert.match(help, /--kube-subnet-mgr/);
  });

  it('iptables, ip6tables (nft and legacy, and the plain names), their -save and -restore, and nft run', async () => {
    const tools = ['iptables', 'ip6tables'].flatMap((t) => ['', '-nft', '-legacy'].flatMap((v) => ['', '-save', '-restore'].map((s) => `${t}${v}${s}`)));
    const out = await mustPodman(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', 'for c in "$@"; do printf "%s: " "$c"; "$c" --version 2>&1 || echo "failed $?"; done', 'sh', ...tools, 'nft']);
    const lines = out.trim().split('\n');
    assert.equal(lines.length, tools.length + 1, out);
    for (const t of tools) {
      const variant = t.includes('-legacy') ? 'legacy' : 'nf_tables';
      assert.ok(lines.some((l) => new RegExp(`^${t}: \\S+ v1\\.[\\d.]+ \\(${variant}\\)$`).test(l)), `${t} --version in the image: ${out}`);
    }
    assert.ok(lines.some((l) => /^nft: nftables v1\./.test(l)), out);
  });

  it('the init containers, as the manifest gives them: the CNI plugins land on the node and run there, the conflist is renamed into place', async () => {
    const [plugins, conf] = daemonSet.initContainers;
    assert.equal(plugins?.name, 'install-cni-plugins');
    assert.equal(conf?.name, 'install-cni-conf');
    for (const c of [plugins, conf]) {
      assert.equal(c.image, IMAGE);
      await mustPodman(['run', '--rm', '--network', 'none', ...volumeArgs(c), '--entrypoint', JSON.stringify(c.command), IMAGE]);
    }
    const bin = join(dir, 'host', 'opt', 'cni', 'bin');
    for (const p of ['bridge', 'host-local', 'loopback', 'portmap', 'flannel']) assert.ok(existsSync(join(bin, p)), `${p} installed`);
    // The executable from the image runs on the node, without Node or node_modules.
    const version = await exec(join(bin, 'bridge'), [], { PATH: '/usr/sbin:/usr/bin', CNI_COMMAND: 'VERSION', TWILL_NATIVE_DIR: join(dir, 'native') });
    assert.equal(version.code, 0, version.stderr);
    assert.ok((JSON.parse(version.stdout) as { supportedVersions: string[] }).supportedVersions.includes('0.3.1'));
    const netd = join(dir, 'host', 'etc', 'cni', 'net.d');
    assert.equal(readFileSync(join(netd, '10-flannel.conflist'), 'utf8'), configMap.data!['cni-conf.json']);
    assert.ok(!existsSync(join(netd, '.10-flannel.conflist.tmp')));
  });

  it('the agent container, as the manifest gives it (but the local store: no API server here), reaches "ready": VXLAN, subnet.env, masquerade through the image\'s iptables, /healthz and /readyz', async () => {
    const agent = daemonSet.containers[0]!;
    assert.equal(agent.image, IMAGE);
    const command = agent.command.map((a) => (a === '--store=kube' ? '--store=local:/var/lib/twill/leases.db' : a.replace('$(POD_IP)', '127.0.0.1')));
    assert.ok(command.includes('--store=local:/var/lib/twill/leases.db'), 'the manifest\'s agent uses --store=kube');
    // Its own network namespace has only lo: the agent takes it as the node's interface.
    command.push('--iface=lo', '--public-ip=127.0.0.1');
    const caps = agent.securityContext?.capabilities?.add ?? [];
    assert.equal(agent.securityContext?.privileged, false);
    await mustPodman([
      'run', '--detach', '--name', 'agent', '--network', 'none', '--sysctl', 'net.ipv4.ip_forward=1',
      ...caps.map((c) => `--cap-add=${c}`), '--env', 'NODE_NAME=node-a', '--env', 'POD_IP=127.0.0.1', '--env', 'POD_NAMESPACE=kube-twill',
      ...volumeArgs(agent), '--entrypoint', JSON.stringify(command), IMAGE,
    ]);
    let logs = '';
    for (let i = 0; i < 150 && !/"msg":"ready"/.test(logs); i++) {
      await new Promise((r) => setTimeout(r, 200));
      const r = await podman(['logs', 'agent']);
      logs = r.stdout + r.stderr;
      if (/"msg":"agent stopped"/.test(logs)) break;
    }
    assert.match(logs, /"msg":"ready"/, `the agent did not get ready:\n${logs}`);
    // Its logs are pino's JSON lines: the agent's own packages load from the image.
    for (const line of logs.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line);

    const subnetEnv = readFileSync(join(dir, 'host', 'run', 'flannel', 'subnet.env'), 'utf8');
    assert.match(subnetEnv, /^FLANNEL_NETWORK=10\.244\.0\.0\/16$/m);
    assert.match(subnetEnv, /^FLANNEL_SUBNET=10\.244\.\d+\.1\/24$/m);
    assert.match(subnetEnv, /^FLANNEL_IPMASQ=true$/m);
    assert.ok(existsSync(join(dir, 'host', 'var', 'lib', 'twill', 'leases.db')), 'the lease store on the data volume');
    const nat = await mustPodman(['exec', 'agent', 'iptables-save', '-t', 'nat']);
    assert.match(nat, /-A FLANNEL-POSTRTG .*-j MASQUERADE --random-fully/);

    const pid = (await mustPodman(['inspect', '--format', '{{.State.Pid}}', 'agent'])).trim();
    assert.match(pid, /^[1-9]\d*$/);
    const netns = `--net=/proc/${pid}/ns/net`;
    const vxlan = JSON.parse((await exec('nsenter', [netns, 'ip', '-j', '-d', 'link', 'show', 'flannel.1'], env)).stdout) as { linkinfo: { info_kind: string; info_data: { id: number } } }[];
    assert.equal(vxlan[0]?.linkinfo.info_kind, 'vxlan');
    assert.equal(vxlan[0]?.linkinfo.info_data.id, 1);
    for (const probe of [agent.livenessProbe!, agent.readinessProbe!]) {
      const { path, port } = probe.httpGet;
      const r = await exec('nsenter', [netns, 'curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}${path}`], env);
      assert.equal(r.stdout, '200', `${path}: ${r.stderr}`);
    }

    await mustPodman(['stop', '--time', '10', 'agent']);
    assert.equal((await mustPodman(['inspect', '--format', '{{.State.ExitCode}}', 'agent'])).trim(), '0');
    const last = await podman(['logs', 'agent']);
    assert.match(last.stdout + last.stderr, /stopping: the network stays in place/);
    await mustPodman(['rm', 'agent']);
  });
});
