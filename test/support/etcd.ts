// Real etcd servers for tests: /usr/bin/etcd (Debian etcd-server 3.4) with a
// temp data dir, one member or a 3-member cluster, either on 127.0.0.1 with
// free ports (the root namespace gets nothing but listening sockets) or each
// member inside a test network namespace on that namespace's address.
//
// Nothing outlives the test process: every etcd runs under
// `setpriv --pdeathsig KILL`, so the kernel kills it when its parent dies
// (even by SIGKILL), and an exit hook kills what is left and removes the data
// dirs. Readiness is polled (/health), never slept for.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RUN_PREFIX } from './hosts.js';

export const ETCD = '/usr/bin/etcd';

/** Where a member listens: loopback (null netns) or a test namespace's address. */
export interface Placement {
  netns: string | null;
  ip: string;
}

export interface EtcdMember {
  readonly index: number;
  readonly name: string;
  readonly placement: Placement;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  proc: ChildProcess | null;
}

const live = new Set<EtcdCluster>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // Synchronous: runs on process.exit() too. Signals become an exit.
  process.on('exit', () => {
    for (const c of live) c.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => process.exit(130));
  }
}

/** A port nobody listens on right now (the kernel's pick; it may be taken again before etcd binds it, rarely). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let counter = 0;

export interface EtcdOptions {
  /** 1 (default) or 3 members. */
  members?: number;
  /** One placement per member; default: all on 127.0.0.1 with free ports. */
  placements?: Placement[];
  /** How long start-up may take before it is a failure (ms). */
  readyTimeoutMs?: number;
  /** Clients must speak TLS with a client certificate (etcd's --client-cert-auth); see EtcdCluster.tls. */
  tls?: boolean;
}

/** PEM files a client needs for a TLS cluster: the CA that signed the members' certificates, a client certificate. */
export interface EtcdTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A throwaway CA, a server certificate for `ips`, and a client certificate, in `dir` (openssl). */
function makePki(dir: string, ips: string[]): { client: EtcdTls; serverCert: string; serverKey: string } {
  const f = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=twill test CA');
  const sign = (name: string, cn: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  };
  sign('server', 'etcd', `subjectAltName=${[...new Set(ips)].map((ip) => `IP:${ip}`).join(',')}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  sign('client', 'twill', 'extendedKeyUsage=clientAuth\n');
  return { client: { caFile: f('ca.pem'), certFile: f('client.pem'), keyFile: f('client.key') }, serverCert: f('server.pem'), serverKey: f('server.key') };
}

export class EtcdCluster {
  private destroyed = false;
  /** Set for a TLS cluster: what a client passes (EtcdStoreOptions caFile, certFile, keyFile). */
  tls: EtcdTls | null = null;
  private serverTls: { cert: string; key: string } | null = null;

  private constructor(
    /** The temp dir holding every member's data dir and log. */
    readonly root: string,
    readonly members: EtcdMember[],
  ) {}

  /** Starts the members and waits until every one reports healthy. */
  static async start(opts: EtcdOptions = {}): Promise<EtcdCluster> {
    if (!existsSync(ETCD)) throw new Error(`${ETCD} is missing: install Debian's etcd-server (apt-get install etcd-server; .ci/run does)`);
    const n = opts.placements?.length ?? opts.members ?? 1;
    const placements = opts.placements ?? Array.from({ length: n }, () => ({ netns: null, ip: '127.0.0.1' }));
    const root = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-${process.pid}-etcd-${counter++}-`));
    const members: EtcdMember[] = [];
    for (let i = 0; i < n; i++) {
      const p = placements[i]!;
      // In its own namespace a member has the address to itself: the standard ports.
      const [cport, pport] = p.netns ? [2379, 2380] : [await freePort(), await freePort()];
      members.push({
        index: i,
        name: `m${i}`,
        placement: p,
        clientUrl: `${opts.tls ? 'https' : 'http'}://${p.ip}:${cport}`,
        peerUrl: `http://${p.ip}:${pport}`,
        dataDir: join(root, `m${i}`),
        logFile: join(root, `m${i}.log`),
        proc: null,
      });
    }
    const cluster = new EtcdCluster(root, members);
    live.add(cluster);
    hookExit();
    try {
      if (opts.tls) {
        const pki = makePki(root, placements.map((p) => p.ip));
        cluster.tls = pki.client;
        cluster.serverTls = { cert: pki.serverCert, key: pki.serverKey };
      }
      for (const m of members) cluster.spawn(m);
      await Promise.all(members.map((m) => cluster.waitHealthy(m, opts.readyTimeoutMs ?? 30_000)));
    } catch (e) {
      await cluster.stopAll();
      cluster.destroySync();
      throw e;
    }
    return cluster;
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  private initialCluster(): string {
    return this.members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  }

  private spawn(m: EtcdMember): void {
    if (this.destroyed) throw new Error('the etcd cluster was destroyed');
    if (m.proc) throw new Error(`etcd member ${m.name} is already running`);
    const args = [
      '--pdeathsig', 'KILL', ETCD,
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', m.clientUrl,
      '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl,
      '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', this.initialCluster(),
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `twill-test-${process.pid}-${this.root.slice(-6)}`,
      ...(this.serverTls ? ['--cert-file', this.serverTls.cert, '--key-file', this.serverTls.key, '--trusted-ca-file', this.tls!.caFile, '--client-cert-auth'] : []),
      '--logger', 'zap',
      '--log-outputs', 'stderr',
    ];
    const [cmd, argv] = m.placement.netns ? ['ip', ['netns', 'exec', m.placement.netns, 'setpriv', ...args]] : ['setpriv', args];
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    const log = createWriteStream(m.logFile, { flags: 'a' });
    proc.stderr!.pipe(log);
    proc.once('exit', () => {
      if (m.proc === proc) m.proc = null;
    });
    m.proc = proc;
  }

  /** GET (or POST with a body) on a member's client URL, from wherever the member is reachable. */
  async request(m: EtcdMember, path: string, body?: string): Promise<{ status: number; text: string }> {
    const url = `${m.clientUrl}${path}`;
    const tls = this.tls;
    if (!m.placement.netns && tls) {
      return new Promise((resolve, reject) => {
        const req = httpsRequest(url, { method: body === undefined ? 'GET' : 'POST', ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile), timeout: 2000 }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 2 s`)));
        req.on('error', reject);
        req.end(body);
      });
    }
    if (!m.placement.netns) {
      const res = await fetch(url, { method: body === undefined ? 'GET' : 'POST', body, signal: AbortSignal.timeout(2000) });
      return { status: res.status, text: await res.text() };
    }
    const tlsArgs = tls ? ['--cacert', tls.caFile, '--cert', tls.certFile, '--key', tls.keyFile] : [];
    const args = ['netns', 'exec', m.placement.netns, 'curl', '-s', '-m', '2', ...tlsArgs, '-w', '\n%{http_code}', ...(body === undefined ? [] : ['-X', 'POST', '-d', body]), url];
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('ip', args, { stdio: ['ignore', 'pipe', 'ignore'] });
      let s = '';
      p.stdout.on('data', (d: Buffer) => (s += d.toString()));
      p.once('error', reject);
      p.once('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`curl ${url} exited with ${code}`))));
    });
    const nl = out.lastIndexOf('\n');
    return { status: Number(out.slice(nl + 1)), text: out.slice(0, nl) };
  }

  private async waitHealthy(m: EtcdMember, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (!m.proc) throw new Error(`etcd member ${m.name} exited during start-up:\n${this.tail(m)}`);
      try {
        const r = await this.request(m, '/health');
        if (r.status === 200 && (JSON.parse(r.text) as { health?: string }).health === 'true') return;
        last = `${r.status} ${r.text}`;
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`etcd member ${m.name} (${m.clientUrl}) not healthy after ${timeoutMs} ms (last: ${last}):\n${this.tail(m)}`);
      await sleep(50);
    }
  }

  /** The last lines of a member's log, for failure messages. */
  tail(m: EtcdMember, lines = 15): string {
    try {
      return readFileSync(m.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** The member that is the raft leader now, as its running members agree (waits for an election). */
  async leader(timeoutMs = 15_000): Promise<EtcdMember> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ids = new Map<string, EtcdMember>();
      const leaders = new Set<string>();
      for (const m of this.members.filter((x) => x.proc)) {
        try {
          const r = await this.request(m, '/v3/maintenance/status', '{}');
          const s = JSON.parse(r.text) as { header?: { member_id?: string }; leader?: string };
          if (s.header?.member_id) ids.set(s.header.member_id, m);
          leaders.add(s.leader ?? '0');
        } catch {
          leaders.add('0');
        }
      }
      if (leaders.size === 1) {
        const found = ids.get([...leaders][0]!);
        if (found) return found;
      }
      if (Date.now() > deadline) throw new Error(`no etcd leader agreed on within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /** SIGTERM, and waits until it has exited. */
  async stop(m: EtcdMember): Promise<void> {
    await this.signal(m, 'SIGTERM');
  }

  /** SIGKILL (a crash), and waits until it has exited. */
  async kill(m: EtcdMember): Promise<void> {
    await this.signal(m, 'SIGKILL');
  }

  private async signal(m: EtcdMember, sig: NodeJS.Signals): Promise<void> {
    const p = m.proc;
    if (!p) return;
    const exited = new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));
    p.kill(sig);
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }

  /** Starts a stopped member again (same data dir) and waits until it is healthy. */
  async start(m: EtcdMember, timeoutMs = 30_000): Promise<void> {
    this.spawn(m);
    await this.waitHealthy(m, timeoutMs);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.members.map((m) => this.kill(m)));
  }

  /** Stops every member and removes the data dirs; idempotent. */
  async destroy(): Promise<void> {
    await this.stopAll();
    this.destroySync();
  }

  /** For the exit hook: kill what runs, remove the files. */
  destroySync(): void {
    for (const m of this.members) {
      const pid = m.proc?.pid;
      if (pid !== undefined && m.proc!.exitCode === null && m.proc!.signalCode === null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    // SIGKILLed members write nothing more; retries cover the moment before the kernel has reaped them.
    rmSync(this.root, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  }
}
