// The server side of the warm path (forward.ts): a unix socket on which a
// long-running twill runs the calls plugin processes hand over, with the same
// plugin code and the same answers as the plugin process would give. It serves
// only callers that see what it sees (mount and network namespace, cwd, twill
// version); others are told to run the call themselves.
import { chmodSync, lstatSync, mkdirSync, renameSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { identityOf } from './delegate.js';
import { invoke, renderOutcome } from './runner.js';
import { clearTrace } from './trace.js';
import { CNI_VARIABLES, FORWARD_PROTOCOL, MAX_MESSAGE_BYTES, callerView, viewMismatch, type CallerView, type ForwardAnswer, type ForwardRequest } from './forward.js';
import type { Plugin } from './plugin.js';

export interface CniServerOptions {
  socket: string;
  /** twill's version: callers of another version run their calls themselves. */
  twill: string;
  /** The plugin a caller was run as (null: not one this server has). */
  loadPlugin(type: string): Promise<Plugin> | null;
  /** Each call served, refused or failed, for logs and metrics. */
  onCall?(event: CniCallEvent): void;
  /** The listening socket failed (e.g. out of file descriptors): it keeps listening. */
  onError?(err: Error): void;
}

export interface CniCallEvent {
  plugin: string;
  command: string;
  containerId: string;
  /** served: the plugin code ran (code is its exit status); refused: the caller runs it itself. */
  outcome: 'served' | 'refused' | 'bad-request';
  code?: number;
  reason?: string;
  ms: number;
}

export class CniServerError extends Error {}

export class CniServer {
  private readonly own: CallerView;
  private readonly sockets = new Set<Socket>();
  /** Calls in progress by container: a container's calls run one after the other (a DEL waits for its ADD). */
  private readonly byContainer = new Map<string, Promise<unknown>>();

  private constructor(private readonly server: Server, private readonly opts: CniServerOptions, private readonly identity: string | null) {
    this.own = callerView(opts.twill);
  }

  /**
   * Listens on `socket`, mode 0600 (a call can make the server run any plugin
   * in CNI_PATH as root): on a temporary name first, made 0600, then renamed
   * into place, so the path never holds a socket others may use. A socket file
   * no server answers on (left by a crash) is replaced; one a live server
   * answers on is an error.
   */
  static async listen(opts: CniServerOptions): Promise<CniServer> {
    const dir = dirname(opts.socket);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    await refuseLiveSocket(opts.socket);
    const temp = join(dir, `.${basename(opts.socket)}.${process.pid}`);
    // Half-open: the caller ends its side once the request is sent, and waits for the answer.
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new CniServerError(`cannot listen on ${opts.socket}: ${e.message}`)));
      server.listen(temp, () => resolve());
    });
    let identity: string | null;
    try {
      chmodSync(temp, 0o600);
      identity = identityOf(temp);
      renameSync(temp, opts.socket);
    } catch (e) {
      server.close();
      throw new CniServerError(`cannot listen on ${opts.socket}: ${(e as Error).message}`);
    }
    const s = new CniServer(server, opts, identity);
    server.on('error', (e) => opts.onError?.(e));
    server.on('connection', (conn) => s.accept(conn));
    return s;
  }

  /**
   * Stops listening, waits up to `graceMs` for the calls in progress (their
   * callers are waiting for the answers), and removes the socket file if it is
   * still this server's (another server may have taken the path over).
   */
  async close(graceMs = 10_000): Promise<void> {
    try {
      if (this.identity !== null && identityOf(this.opts.socket) === this.identity) unlinkSync(this.opts.socket);
    } catch {
      // gone since
    }
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const timer = setTimeout(() => {
      for (const conn of this.sockets) conn.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }

  private notify(event: CniCallEvent): void {
    try {
      this.opts.onCall?.(event);
    } catch {
      // Logging or counting a call must not change its answer.
    }
  }

  private accept(conn: Socket): void {
    this.sockets.add(conn);
    const chunks: Buffer[] = [];
    let size = 0;
    let started = false;
    const start = () => {
      started = true;
      // The answer, or nothing when the call ran and its answer could not be made: the
      // connection is then dropped, and the caller reports the call as lost (code 11)
      // rather than running it a second time.
      void this.answer(Buffer.concat(chunks)).then(
        (a) => conn.end(`${JSON.stringify(a)}\n`),
        () => conn.destroy(),
      );
    };
    conn.on('data', (d: Buffer) => {
      if (started) return;
      size += d.length;
      if (size > MAX_MESSAGE_BYTES) {
        started = true;
        conn.destroy();
        return;
      }
      chunks.push(d);
      if (d.includes(0x0a)) start();
    });
    // A request without its newline is answered (as a bad one) once the caller closes its
    // end; a connection that sent nothing (another server checking whether this one is
    // alive) is not a call.
    conn.on('end', () => {
      if (!started && size > 0) start();
      else if (!started) conn.end();
    });
    // A caller that went away (killed by its runtime's timeout) gets no answer; the call itself finishes.
    conn.on('error', () => undefined);
    conn.on('close', () => this.sockets.delete(conn));
  }

  /** Rejects only when the call ran and no answer can be given. */
  private async answer(raw: Buffer): Promise<ForwardAnswer> {
    const started = performance.now();
    let req: ForwardRequest;
    try {
      req = parseRequest(raw);
    } catch (e) {
      const reason = `bad request: ${(e as Error).message}`;
      this.notify({ plugin: '', command: '', containerId: '', outcome: 'bad-request', reason, ms: performance.now() - started });
      return { served: false, reason };
    }
    const event = { plugin: req.plugin, command: req.env.CNI_COMMAND ?? '', containerId: req.env.CNI_CONTAINERID ?? '' };
    const refuse = (reason: string): ForwardAnswer => {
      this.notify({ ...event, outcome: 'refused', reason, ms: performance.now() - started });
      return { served: false, reason };
    };
    if (req.protocol !== FORWARD_PROTOCOL) return refuse(`protocol ${req.protocol}, the server speaks ${FORWARD_PROTOCOL}`);
    const mismatch = viewMismatch(this.own, req.caller);
    if (mismatch) return refuse(mismatch);
    let plugin: Plugin;
    try {
      const loading = this.opts.loadPlugin(req.plugin);
      if (!loading) return refuse(`the server has no plugin "${req.plugin}"`);
      plugin = await loading;
    } catch (e) {
      return refuse(`the server cannot load plugin "${req.plugin}": ${(e as Error).message}`);
    }
    // From here the call runs: whatever happens, it is not handed back to the caller.
    const outcome = await this.inTurn(event.containerId, () => invoke(plugin, req.env, Buffer.from(req.stdin, 'base64'), req.caller.executables));
    // Calls overlap here, so per-call timings mean nothing; TWILL_CNI_TRACE in the server's environment must not pile them up.
    clearTrace();
    const { code, stdout } = renderOutcome(outcome);
    const ms = performance.now() - started;
    this.notify({ ...event, outcome: 'served', code, ...(outcome.ok ? {} : { reason: outcome.error.message }), ms });
    return { served: true, code, stdout, ms };
  }

  /**
   * Runs fn after the calls in progress for the same container: a runtime that
   * gave up on an ADD (and killed its plugin process) sends a DEL, which must
   * not run beside the ADD still going on here.
   */
  private async inTurn<T>(containerId: string, fn: () => Promise<T>): Promise<T> {
    if (containerId === '') return fn();
    const before = this.byContainer.get(containerId) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const settled = mine.then(() => undefined, () => undefined);
    this.byContainer.set(containerId, settled);
    try {
      return await mine;
    } finally {
      if (this.byContainer.get(containerId) === settled) this.byContainer.delete(containerId);
    }
  }
}

function parseRequest(raw: Buffer): ForwardRequest {
  const r = JSON.parse(raw.toString('utf8')) as Partial<ForwardRequest>;
  const c = r.caller as Partial<CallerView> | undefined;
  if (typeof r.protocol !== 'number' || typeof r.plugin !== 'string' || typeof r.stdin !== 'string' || typeof r.env !== 'object' || r.env === null) {
    throw new Error('needs protocol, plugin, env and stdin');
  }
  if (!c || typeof c.mountNs !== 'string' || typeof c.netNs !== 'string' || typeof c.cwd !== 'string' || typeof c.twill !== 'string' || !Array.isArray(c.executables)) {
    throw new Error("needs the caller's view");
  }
  // Only the call's own variables reach the plugin code, as strings.
  const env: ForwardRequest['env'] = {};
  for (const k of CNI_VARIABLES) {
    const v = (r.env as Record<string, unknown>)[k];
    if (typeof v === 'string') env[k] = v;
  }
  return { protocol: r.protocol, plugin: r.plugin, env, stdin: r.stdin, caller: { mountNs: c.mountNs, netNs: c.netNs, cwd: c.cwd, twill: c.twill, executables: c.executables.filter((x): x is string => typeof x === 'string') } };
}

/**
 * Refuses when a server answers on `path`. Only a refused connection proves
 * there is none (the file is then left by a crash, and the rename replaces it);
 * any other failure (a full backlog, no permission) says nothing either way.
 */
async function refuseLiveSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) return;
  } catch {
    return;
  }
  const probe = await new Promise<string>((resolve) => {
    const c = createConnection(path);
    c.on('connect', () => {
      c.end();
      resolve('live');
    });
    c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  if (probe === 'live') throw new CniServerError(`another server is serving CNI calls at ${path}`);
  if (probe !== 'ECONNREFUSED' && probe !== 'ENOENT') throw new CniServerError(`cannot tell whether a server is serving CNI calls at ${path} (connecting failed: ${probe}): not replacing it`);
}
