// The few Kubernetes API calls the kube store makes (get, list and watch nodes;
// patch a node and its status), over node:http(s), and where to find the API:
// a kubeconfig file (--kubeconfig-file, with --kube-api-url overriding its
// server), --kube-api-url alone, or in-cluster (the pod's service account),
// in the order flannel's clientcmd.BuildConfigFromFlags uses.
//
// Not @kubernetes/client-node: for these five calls it would bring ~30
// packages (node-fetch, openid-client, ws, tar-fs, jsonpath-plus, ...) into an
// agent that runs on every node, and its watch hides the resourceVersion
// handling the store needs to control (410 Gone → list again). Only the
// kubeconfig's YAML needs a parser (js-yaml).
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';
import { load as loadYaml } from 'js-yaml';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Where the API is and how to authenticate: resolved once, at open. */
export interface KubeConnection {
  /** https://10.96.0.1:443 (no trailing slash). */
  server: string;
  ca: Buffer | null;
  insecureSkipTlsVerify: boolean;
  clientCert: Buffer | null;
  clientKey: Buffer | null;
  /** A bearer token, read on every call: a projected service-account token is rotated on disk. */
  token: (() => string) | null;
  basic: { username: string; password: string } | null;
  /** Where these settings came from, for messages: "kubeconfig /etc/kube/config (context admin)". */
  source: string;
}

/** The connection settings are unusable: a missing file, a kubeconfig without a server, ... */
export class KubeConfigError extends Error {}

export interface ConnectionOptions {
  /** --kube-api-url. */
  apiUrl: string | null;
  /** --kubeconfig-file. */
  kubeconfigFile: string | null;
  /** In-cluster: the environment (KUBERNETES_SERVICE_HOST/PORT) and the service account's files. */
  env?: NodeJS.ProcessEnv;
  serviceAccountDir?: string;
}

const readFile = (path: string, what: string, source: string): Buffer => {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new KubeConfigError(`${source}: cannot read the ${what} ${path}: ${(e as Error).message}`);
  }
};

function checkServer(server: string, source: string): string {
  let u: URL;
  try {
    u = new URL(server);
  } catch {
    throw new KubeConfigError(`${source}: the API server ${JSON.stringify(server)} is not a URL (expected e.g. https://10.0.0.1:6443)`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new KubeConfigError(`${source}: the API server ${JSON.stringify(server)} must be an http:// or https:// URL`);
  return server.replace(/\/+$/, '');
}

/** The connection flannel would use for these flags (BuildConfigFromFlags, then in-cluster). */
export function resolveConnection(opts: ConnectionOptions): KubeConnection {
  if (opts.kubeconfigFile) {
    const conn = loadKubeconfig(opts.kubeconfigFile);
    return opts.apiUrl ? { ...conn, server: checkServer(opts.apiUrl, '--kube-api-url'), source: `${conn.source}, server from --kube-api-url` } : conn;
  }
  if (opts.apiUrl) {
    return { server: checkServer(opts.apiUrl, '--kube-api-url'), ca: null, insecureSkipTlsVerify: false, clientCert: null, clientKey: null, token: null, basic: null, source: '--kube-api-url' };
  }
  return inClusterConnection(opts.env ?? process.env, opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR);
}

function inClusterConnection(env: NodeJS.ProcessEnv, dir: string): KubeConnection {
  const source = 'in-cluster config (service account)';
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new KubeConfigError('no Kubernetes API to talk to: give --kubeconfig-file FILE or --kube-api-url URL, or run in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)');
  }
  const tokenFile = join(dir, 'token');
  readFile(tokenFile, 'service account token', source);
  return {
    server: checkServer(`https://${host.includes(':') ? `[${host}]` : host}:${port}`, source),
    ca: readFile(join(dir, 'ca.crt'), 'service account CA', source),
    insecureSkipTlsVerify: false,
    clientCert: null,
    clientKey: null,
    token: () => readFile(tokenFile, 'service account token', source).toString().trim(),
    basic: null,
    source,
  };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function loadKubeconfig(file: string): KubeConnection {
  const text = readFile(file, 'kubeconfig', '--kubeconfig-file').toString();
  let doc: unknown;
  try {
    doc = loadYaml(text);
  } catch (e) {
    throw new KubeConfigError(`kubeconfig ${file} is not YAML: ${(e as Error).message}`);
  }
  if (!isObj(doc)) throw new KubeConfigError(`kubeconfig ${file} is not a kubeconfig (expected a mapping with clusters, users, contexts)`);
  const named = (list: string, key: string, name: string): Obj => {
    const items = Array.isArray(doc[list]) ? (doc[list] as unknown[]) : [];
    const found = items.find((i): i is Obj => isObj(i) && i.name === name);
    if (!found || !isObj(found[key])) throw new KubeConfigError(`kubeconfig ${file}: no ${key} named ${JSON.stringify(name)} in ${list}`);
    return found[key];
  };
  const current = doc['current-context'];
  let contextName: string;
  if (typeof current === 'string' && current) contextName = current;
  else {
    const contexts = Array.isArray(doc.contexts) ? doc.contexts : [];
    const only = contexts.length === 1 && isObj(contexts[0]) && typeof contexts[0].name === 'string' ? contexts[0].name : null;
    if (!only) throw new KubeConfigError(`kubeconfig ${file} has no current-context`);
    contextName = only;
  }
  const source = `kubeconfig ${file} (context ${contextName})`;
  const ctx = named('contexts', 'context', contextName);
  const cluster = named('clusters', 'cluster', String(ctx.cluster ?? ''));
  const user = ctx.user === undefined || ctx.user === '' ? {} : named('users', 'user', String(ctx.user));
  const str = (o: Obj, k: string): string | null => (typeof o[k] === 'string' && o[k] !== '' ? o[k] : null);
  // Relative paths in a kubeconfig are relative to the file (clientcmd does the same).
  const path = (p: string) => (isAbsolute(p) ? p : join(dirname(file), p));
  const pem = (o: Obj, dataKey: string, fileKey: string, what: string): Buffer | null => {
    const data = str(o, dataKey);
    if (data) return Buffer.from(data, 'base64');
    const f = str(o, fileKey);
    return f ? readFile(path(f), what, source) : null;
  };
  const server = str(cluster, 'server');
  if (!server) throw new KubeConfigError(`${source}: the cluster has no server`);
  if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    throw new KubeConfigError(`${source}: exec and auth-provider credentials are not supported: use a token, a token file or a client certificate`);
  }
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  const username = str(user, 'username');
  const password = str(user, 'password');
  const clientCert = pem(user, 'client-certificate-data', 'client-certificate', 'client certificate');
  const clientKey = pem(user, 'client-key-data', 'client-key', 'client key');
  if ((clientCert === null) !== (clientKey === null)) throw new KubeConfigError(`${source}: a client certificate needs its key and the other way round`);
  return {
    server: checkServer(server, source),
    ca: pem(cluster, 'certificate-authority-data', 'certificate-authority', 'certificate authority'),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    clientCert,
    clientKey,
    token: token ? () => token : tokenFile ? () => readFile(path(tokenFile), 'token file', source).toString().trim() : null,
    basic: username && password ? { username, password } : null,
    source,
  };
}

/** The API answered with an error status (its Status object's reason and message) to `method path`. */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly method = '',
    readonly path = '',
  ) {
    super(message);
  }
}

/**
 * The RBAC verb and resource a call needs, as the API server's authorizer sees
 * it: GET of a collection is list (watch with ?watch=true), of one object get;
 * a subresource is "nodes/status". null for a path that is not a core resource.
 */
export function rbacRight(method: string, path: string): { verb: string; resource: string } | null {
  const [p = '', query = ''] = path.split('?');
  const m = /^\/api\/v1\/(?:namespaces\/[^/]+\/)?([a-z]+)(?:\/([^/]+)(?:\/([a-z]+))?)?$/.exec(p);
  if (!m) return null;
  const [, resource, name, sub] = m;
  const watch = new URLSearchParams(query).get('watch');
  const verbs: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: name ? 'delete' : 'deletecollection' };
  const verb = method === 'GET' ? (watch === 'true' || watch === '1' ? 'watch' : name ? 'get' : 'list') : verbs[method];
  return verb ? { verb, resource: `${resource}${sub ? `/${sub}` : ''}` } : null;
}

/** The API could not be reached, or did not answer in time. */
export class KubeUnreachableError extends Error {}

export interface KubeWatch {
  close(): void;
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

export class KubeClient {
  constructor(
    readonly conn: KubeConnection,
    readonly timeoutMs: number,
  ) {}

  private open(method: string, path: string, headers: Record<string, string>): ClientRequest {
    const c = this.conn;
    const url = new URL(`${c.server}${path}`);
    const auth: Record<string, string> = {};
    if (c.token) auth.authorization = `Bearer ${c.token()}`;
    else if (c.basic) auth.authorization = `Basic ${Buffer.from(`${c.basic.username}:${c.basic.password}`).toString('base64')}`;
    const options = { method, headers: { accept: 'application/json', 'user-agent': 'twill', ...auth, ...headers } };
    if (url.protocol === 'http:') return httpRequest(url, options);
    return httpsRequest(url, {
      ...options,
      ...(c.ca ? { ca: c.ca } : {}),
      ...(c.clientCert && c.clientKey ? { cert: c.clientCert, key: c.clientKey } : {}),
      rejectUnauthorized: !c.insecureSkipTlsVerify,
    });
  }

  private unreachable(method: string, path: string, e: unknown): KubeUnreachableError {
    const text = errorText(e);
    const tls = /certificate|self[- ]signed|SSL|TLS|issuer/i.test(text) ? ' (check the CA: certificate-authority in the kubeconfig)' : '';
    return new KubeUnreachableError(`${method} ${this.conn.server}${path}: ${text}${tls}`);
  }

  private static apiError(status: number, body: string, method: string, path: string): KubeApiError {
    let reason = '';
    let message = body.trim().slice(0, 300);
    try {
      const s = JSON.parse(body) as unknown;
      if (isObj(s)) {
        if (typeof s.reason === 'string') reason = s.reason;
        if (typeof s.message === 'string') message = s.message;
      }
    } catch {
      // Not a Status object: the raw text is the message.
    }
    return new KubeApiError(status, reason, `${status}${reason ? ` ${reason}` : ''}: ${message || '(no message)'}`, method, path);
  }

  /** One call; a 2xx answer's JSON body, else KubeApiError; KubeUnreachableError when there is no answer. */
  call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let req: ClientRequest;
      const payload = body === undefined ? undefined : JSON.stringify(body);
      try {
        req = this.open(method, path, payload === undefined ? {} : { 'content-type': contentType, 'content-length': String(Buffer.byteLength(payload)) });
      } catch (e) {
        reject(this.unreachable(method, path, e));
        return;
      }
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('error', (e) => {
        clearTimeout(timer);
        reject(this.unreachable(method, path, e));
      });
      req.on('response', (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(this.unreachable(method, path, e));
        });
        res.on('end', () => {
          clearTimeout(timer);
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            reject(KubeClient.apiError(status, text, method, path));
            return;
          }
          try {
            resolve(JSON.parse(text) as unknown);
          } catch (e) {
            reject(new KubeApiError(status, '', `${method} ${path}: the answer is not JSON: ${errorText(e)}`, method, path));
          }
        });
      });
      req.end(payload);
    });
  }

  /**
   * A watch stream: one JSON event per line to onEvent. onEnd once: null when
   * the server ended the stream (its timeoutSeconds), else the error
   * (KubeApiError for an error status such as 410 Gone, KubeUnreachableError).
   */
  watch(path: string, onEvent: (e: unknown) => void, onEnd: (e: Error | null) => void): KubeWatch {
    let done = false;
    const end = (e: Error | null) => {
      if (done) return;
      done = true;
      onEnd(e);
    };
    let req: ClientRequest;
    try {
      req = this.open('GET', path, {});
    } catch (e) {
      queueMicrotask(() => end(this.unreachable('GET', path, e)));
      return { close: () => (done = true) };
    }
    // Until the answer starts; the stream itself may be silent for long (bookmarks come about once a minute).
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      end(this.unreachable('GET', path, e));
    });
    req.on('response', (res: IncomingMessage) => {
      clearTimeout(timer);
      const status = res.statusCode ?? 0;
      let buffered = '';
      res.setEncoding('utf8');
      if (status !== 200) {
        res.on('data', (d: string) => (buffered += d));
        res.on('end', () => end(KubeClient.apiError(status, buffered, 'GET', path)));
        return;
      }
      res.on('data', (d: string) => {
        if (done) return;
        buffered += d;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let event: unknown;
          try {
            event = JSON.parse(line) as unknown;
          } catch (e) {
            end(new KubeApiError(status, '', `watch ${path}: an event is not JSON: ${errorText(e)}`, 'GET', path));
            req.destroy();
            return;
          }
          try {
            onEvent(event);
          } catch (e) {
            end(e as Error);
            req.destroy();
            return;
          }
          if (done) return;
        }
      });
      res.on('error', (e) => end(this.unreachable('GET', path, e)));
      // A stream cut by a dying server ends without error on some paths: `aborted` tells them apart.
      res.on('end', () => end(res.complete ? null : this.unreachable('GET', path, new Error('the stream was cut'))));
    });
    req.end();
    return {
      close: () => {
        done = true;
        clearTimeout(timer);
        req.destroy();
      },
    };
  }
}
