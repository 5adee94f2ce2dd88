// A real Kubernetes API server for tests: kube-apiserver v1.37.2 (built by
// `npm run peers -- kube-apiserver`) on its own etcd (Debian's 3.4), both
// inside one test namespace on the underlay, so that the node namespaces'
// agents reach it as they would on a real cluster. The test process (in the
// root namespace) cannot: it talks to the API with curl inside that namespace.
//
// Authentication is a static token (--token-auth-file, user in system:masters)
// and service-account tokens (TokenRequest: tokenFor()); authorization is
// AlwaysAllow unless a test asks for RBAC (`authorization: 'Node,RBAC'`, as
// kubeadm runs it); TLS with a throwaway CA (openssl). With `audit: true` the
// server logs every request (who, verb, resource, status: auditEvents()), so a
// test can see exactly what a client did. The agents get a kubeconfig in YAML,
// as kubeadm writes them. Nothing outlives the test process: the server runs
// under `setpriv --pdeathsig KILL`, an exit hook kills what is left and
// removes the temp dir.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdCluster } from './etcd.js';
import { RUN_PREFIX } from './hosts.js';

export const KUBE_APISERVER = process.env.TWILL_PEER_KUBE_APISERVER ?? join(process.env.TWILL_PEERS_DIR ?? '/var/cache/twill-peers', 'bin', 'kube-apiserver');

export function requireKubeApiserver(): string {
  if (!existsSync(KUBE_APISERVER)) throw new Error(`${KUBE_APISERVER} is missing: run "npm run peers -- kube-apiserver" (.ci/run does; 10-20 min cold)`);
  return KUBE_APISERVER;
}

const live = new Set<KubeApiServer>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const s of live) s.destroySync();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const PLURALS: Record<string, string> = {
  Namespace: 'namespaces', ServiceAccount: 'serviceaccounts', ClusterRole: 'clusterroles', ClusterRoleBinding: 'clusterrolebindings',
  ConfigMap: 'configmaps', DaemonSet: 'daemonsets',
};

/** The REST collection of an object: core or group API, namespaced or not. */
export function collectionOf(o: { apiVersion: string; kind: string; metadata: { namespace?: string } }): string {
  const resource = PLURALS[o.kind];
  if (!resource) throw new Error(`the test does not know where a ${o.kind} goes`);
  const base = o.apiVersion === 'v1' ? '/api/v1' : `/apis/${o.apiVersion}`;
  return `${base}${o.metadata.namespace ? `/namespaces/${o.metadata.namespace}` : ''}/${resource}`;
}

export interface KubeNodeSpec {
  name: string;
  podCidrs?: string[];
  annotations?: Record<string, string>;
}

/** How the server authorizes: everything, or RBAC (with the Node authorizer first, as kubeadm). */
export type KubeAuthorization = 'AlwaysAllow' | 'RBAC' | 'Node,RBAC';

export interface KubeApiServerOptions {
  readyTimeoutMs?: number;
  /** Default AlwaysAllow: the admin token is in system:masters either way. */
  authorization?: KubeAuthorization;
  /** Log every request (audit level Metadata) for auditEvents(). */
  audit?: boolean;
  extraArgs?: string[];
}

/** One request as the audit log records it (level Metadata, stage ResponseComplete). */
export interface AuditEvent {
  user: string;
  /** The client's User-Agent: twill's calls say "twill", the tests' curl "curl/...". */
  userAgent: string;
  verb: string;
  /** "nodes", "nodes/status", ... (resource/subresource); the path for a non-resource URL. */
  resource: string;
  name: string | null;
  code: number;
  requestURI: string;
}

export interface KubeResponse {
  status: number;
  json: unknown;
  text: string;
}

export class KubeApiServer {
  private proc: ChildProcess | null = null;
  private destroyed = false;
  readonly token = `twill-test-${Math.random().toString(36).slice(2)}`;
  readonly url: string;
  readonly caFile: string;
  readonly kubeconfig: string;
  readonly logFile: string;
  /** The audit log (JSON lines) when started with `audit: true`. */
  readonly auditFile: string;
  /** How long each start took until /readyz answered 200 (ms). */
  readonly startTimes: number[] = [];

  private constructor(
    readonly netns: string,
    readonly ip: string,
    readonly dir: string,
    readonly etcd: EtcdCluster,
    private readonly opts: KubeApiServerOptions,
  ) {
    this.url = `https://${ip}:6443`;
    this.caFile = join(dir, 'ca.pem');
    this.kubeconfig = join(dir, 'kubeconfig.yaml');
    this.logFile = join(dir, 'kube-apiserver.log');
    this.auditFile = join(dir, 'audit.log');
  }

  /** etcd and kube-apiserver in namespace `netns` at `ip`; resolves once /readyz is 200 (with RBAC: once its bootstrap roles exist). */
  static async start(netns: string, ip: string, opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const readyTimeoutMs = opts.readyTimeoutMs ?? 90_000;
    requireKubeApiserver();
    const dir = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-${process.pid}-kube-`));
    let etcd: EtcdCluster;
    try {
      etcd = await EtcdCluster.start({ placements: [{ netns, ip }] });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const s = new KubeApiServer(netns, ip, dir, etcd, opts);
    live.add(s);
    hookExit();
    try {
      s.makeFiles();
      await s.startServer(readyTimeoutMs);
    } catch (e) {
      await s.destroy();
      throw e;
    }
    return s;
  }

  private makeFiles(): void {
    const f = (name: string) => join(this.dir, name);
    const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=twill test kube CA');
    writeFileSync(f('server.ext'), `subjectAltName=IP:${this.ip},IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n`);
    ssl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=kube-apiserver');
    ssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('server.ext'));
    // The service-account signing key pair (the server refuses to start without one).
    ssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', f('sa.key'));
    ssl('pkey', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub'));
    writeFileSync(f('tokens.csv'), `${this.token},twill-admin,twill-admin,"system:masters"\n`);
    // Metadata: who did what to which object, and the answer's status (no bodies).
    writeFileSync(f('audit-policy.yaml'), 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n');
    this.writeKubeconfig('kubeconfig.yaml', this.token);
  }

  /** A kubeconfig (in the server's temp dir, the CA beside it) for this server with a bearer token; returns its path. */
  writeKubeconfig(file: string, token: string): string {
    const path = join(this.dir, file);
    writeFileSync(path, [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${this.url}`,
      '    certificate-authority: ca.pem',
      'users:',
      '- name: twill',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: twill@test',
      '  context: {cluster: test, user: twill}',
      'current-context: twill@test',
      '',
    ].join('\n'));
    return path;
  }

  /**
   * A token for a ServiceAccount (the TokenRequest API, as the kubelet gets a
   * pod's projected token): signed with the server's service-account key.
   */
  async tokenFor(namespace: string, serviceAccount: string, expirationSeconds = 3600): Promise<string> {
    const r = (await this.ok('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${serviceAccount}/token`, {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds },
    })) as { status?: { token?: string } };
    const token = r.status?.token;
    if (!token) throw new Error(`TokenRequest for ${namespace}/${serviceAccount} returned no token: ${JSON.stringify(r)}`);
    return token;
  }

  /** Every completed request so far (needs `audit: true`); optionally only those of one user (and user agent). */
  auditEvents(user?: string, userAgent?: string): AuditEvent[] {
    if (!this.opts.audit) throw new Error('the server was started without audit: KubeApiServer.start(..., { audit: true })');
    let text: string;
    try {
      text = readFileSync(this.auditFile, 'utf8');
    } catch {
      return [];
    }
    const out: AuditEvent[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const e = JSON.parse(line) as {
        stage: string; verb: string; requestURI: string; userAgent?: string; user?: { username?: string };
        objectRef?: { resource?: string; subresource?: string; name?: string }; responseStatus?: { code?: number };
      };
      // A watch also logs ResponseStarted; its ResponseComplete comes when the stream ends.
      if (e.stage !== 'ResponseComplete' && !(e.verb === 'watch' && e.stage === 'ResponseStarted')) continue;
      const username = e.user?.username ?? '';
      if (user !== undefined && username !== user) continue;
      if (userAgent !== undefined && e.userAgent !== userAgent) continue;
      const ref = e.objectRef;
      out.push({
        user: username,
        userAgent: e.userAgent ?? '',
        verb: e.verb,
        resource: ref?.resource ? `${ref.resource}${ref.subresource ? `/${ref.subresource}` : ''}` : e.requestURI.split('?')[0]!,
        name: ref?.name ?? null,
        code: e.responseStatus?.code ?? 0,
        requestURI: e.requestURI,
      });
    }
    return out;
  }

  /** Creates objects as the admin, in order (a manifest's Namespace before what lives in it). */
  async apply(objects: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }[]): Promise<void> {
    for (const o of objects) await this.ok('POST', collectionOf(o), o);
  }

  private spawnServer(): void {
    const f = (name: string) => join(this.dir, name);
    const args = [
      '--pdeathsig', 'KILL', KUBE_APISERVER,
      `--etcd-servers=${this.etcd.endpoints.join(',')}`,
      `--bind-address=${this.ip}`,
      `--advertise-address=${this.ip}`,
      '--secure-port=6443',
      `--tls-cert-file=${f('server.pem')}`,
      `--tls-private-key-file=${f('server.key')}`,
      `--cert-dir=${f('certs')}`,
      `--token-auth-file=${f('tokens.csv')}`,
      `--authorization-mode=${this.opts.authorization ?? 'AlwaysAllow'}`,
      ...(this.opts.audit ? [`--audit-policy-file=${f('audit-policy.yaml')}`, `--audit-log-path=${this.auditFile}`, '--audit-log-format=json', '--audit-log-mode=blocking'] : []),
      `--service-account-key-file=${f('sa.pub')}`,
      `--service-account-signing-key-file=${f('sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      '--service-cluster-ip-range=10.96.0.0/16',
      '--v=1',
      ...(this.opts.extraArgs ?? []),
    ];
    const proc = spawn('ip', ['netns', 'exec', this.netns, 'setpriv', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.pipe(createWriteStream(this.logFile, { flags: 'a' }));
    proc.once('exit', () => {
      if (this.proc === proc) this.proc = null;
    });
    this.proc = proc;
  }

  private async startServer(timeoutMs: number): Promise<void> {
    if (this.destroyed) throw new Error('the API server was destroyed');
    const t0 = Date.now();
    this.spawnServer();
    let last = '';
    for (;;) {
      if (!this.proc) throw new Error(`kube-apiserver exited during start-up:\n${this.tail()}`);
      try {
        const r = await this.request('GET', '/readyz');
        if (r.status === 200) break;
        last = `${r.status} ${r.text.slice(-300)}`;
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`kube-apiserver (${this.url}) not ready after ${timeoutMs} ms (last: ${last}):\n${this.tail()}`);
      await sleep(250);
    }
    this.startTimes.push(Date.now() - t0);
  }

  /** The last lines of the server's log, for failure messages. */
  tail(lines = 20): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** A call as the admin (or with another bearer token), with curl inside the server's namespace. */
  async request(method: string, path: string, body?: unknown, contentType = 'application/json', token = this.token): Promise<KubeResponse> {
    const args = ['netns', 'exec', this.netns, 'curl', '-sS', '-m', '5', '--cacert', this.caFile, '-H', `Authorization: Bearer ${token}`, '-X', method, '-w', '\n%{http_code}'];
    if (body !== undefined) args.push('-H', `Content-Type: ${contentType}`, '--data-binary', JSON.stringify(body));
    args.push(`${this.url}${path}`);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let s = '';
      let err = '';
      p.stdout.on('data', (d: Buffer) => (s += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.once('error', reject);
      p.once('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`curl ${method} ${path} exited with ${code}: ${err.trim()}`))));
    });
    const nl = out.lastIndexOf('\n');
    const text = out.slice(0, nl);
    let json: unknown = null;
    try {
      json = JSON.parse(text) as unknown;
    } catch {
      // /readyz and friends answer in text.
    }
    return { status: Number(out.slice(nl + 1)), json, text };
  }

  /** As request(), but a non-2xx answer is an error naming the call. */
  async ok(method: string, path: string, body?: unknown, contentType?: string): Promise<unknown> {
    const r = await this.request(method, path, body, contentType);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
    return r.json;
  }

  createNode(n: KubeNodeSpec): Promise<unknown> {
    const spec = n.podCidrs?.length ? { podCIDR: n.podCidrs[0], podCIDRs: n.podCidrs } : {};
    return this.ok('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: n.name, ...(n.annotations ? { annotations: n.annotations } : {}) }, spec });
  }

  async getNode(name: string): Promise<{ metadata: { annotations?: Record<string, string>; resourceVersion: string }; status?: { conditions?: { type: string; status: string; reason?: string }[] } }> {
    return (await this.ok('GET', `/api/v1/nodes/${name}`)) as never;
  }

  deleteNode(name: string): Promise<unknown> {
    return this.ok('DELETE', `/api/v1/nodes/${name}`);
  }

  /** Compacts etcd's history up to now: a watch from an older resourceVersion then gets 410 Gone. */
  async compactEtcd(): Promise<number> {
    const m = this.etcd.members[0]!;
    const r = await this.etcd.request(m, '/v3/kv/range', JSON.stringify({ key: Buffer.from('/').toString('base64') }));
    const revision = Number((JSON.parse(r.text) as { header?: { revision?: string } }).header?.revision);
    if (!(revision > 0)) throw new Error(`etcd gave no revision: ${r.status} ${r.text}`);
    const c = await this.etcd.request(m, '/v3/kv/compaction', JSON.stringify({ revision: String(revision), physical: true }));
    if (c.status !== 200) throw new Error(`etcd compaction to ${revision} failed: ${c.status} ${c.text}`);
    return revision;
  }

  /**
   * Stops the server (SIGTERM, then SIGKILL after graceMs); etcd stays. Says which signal ended
   * it: with clients watching, kube-apiserver's graceful shutdown waits for their streams.
   */
  async stop(graceMs = 10_000): Promise<'SIGTERM' | 'SIGKILL' | null> {
    const p = this.proc;
    if (!p) return null;
    const exited = new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));
    let how: 'SIGTERM' | 'SIGKILL' = 'SIGTERM';
    p.kill('SIGTERM');
    const t = setTimeout(() => {
      how = 'SIGKILL';
      p.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(t);
    return how;
  }

  /** Starts a stopped server again (same etcd, same files). */
  async restart(timeoutMs = 90_000): Promise<void> {
    await this.startServer(timeoutMs);
  }

  async destroy(): Promise<void> {
    await this.stop().catch(() => undefined);
    await this.etcd.destroy();
    this.destroySync();
  }

  destroySync(): void {
    const p = this.proc;
    if (p?.pid !== undefined && p.exitCode === null && p.signalCode === null) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    this.etcd.destroySync();
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  }
}
