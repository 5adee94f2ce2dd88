// The server side of the warm path (forward.ts): a unix socket on which a
// long-running twill runs the calls plugin processes hand over, with the same
// plugin code and the same answers as the plugin process would give. It serves
// only callers that see what it sees (mount and network namespace, cwd, twill
// version); others are told to run the call themselves.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
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
  private readonly identity: string;

  private constructor(private readonly server: Server, private readonly opts: CniServerOptions) {
    this.own = callerView(opts.twill);
    const st = lstatSync(opts.socket);
    this.identity = `${st.dev}:${st.ino}`;
  }

  /**
   * Listens on `socket` (mode 0600: a call can make the server run any plugin
   * in CNI_PATH as root). A socket file no server answers on (left by a crash)
   * is replaced; one a live server answers on is an error.
   */
  static async listen(opts: CniServerOptions): Promise<CniServer> {
    mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o700 });
    await removeStaleSocket(opts.socket);
    // Half-open: the caller ends its side once the request is sent, and waits for the answer.
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new CniServerError(`cannot listen on ${opts.socket}: ${e.message}`)));
      server.listen(opts.socket, () => resolve());
    });
    chmodSync(opts.socket, 0o600);
    const s = new CniServer(server, opts);
    server.on('connection', (conn) => s.accept(conn));
    return s;
  }

  get socket(): string {
    return this.opts.socket;
  }

  /**
   * Stops listening, waits up to `graceMs` for the calls in progress (their
   * callers are waiting for the answers), and removes the socket file if it is
   * still this server's.
   */
  async close(graceMs = 10_000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const timer = setTimeout(() => {
      for (const conn of this.sockets) conn.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
    try {
      const st = lstatSync(this.opts.socket);
      if (`${st.dev}:${st.ino}` === this.identity) unlinkSync(this.opts.socket);
    } catch {
      // already gone
    }
  }

  private accept(conn: Socket): void {
    this.sockets.add(conn);
    const chunks: Buffer[] = [];
    let size = 0;
    let started = false;
    const start = () => {
      started = true;
      void this.answer(Buffer.concat(chunks))
        // Only what comes before the plugin code can throw (invoke reports every error as an answer): the caller runs it.
        .catch((e: unknown): ForwardAnswer => ({ served: false, reason: `server error: ${(e as Error).message}` }))
        .then((a) => conn.end(`${JSON.stringify(a)}\n`));
    };
    conn.on('data', (d: Buffer) => {
      if (started) return;
      size += d.length;
      if (size > MAX_MESSAGE_BYTES) conn.destroy();
      else chunks.push(d);
      if (d.includes(0x0a)) start();
    });
    // A request without its newline: answered (as a bad request) once the caller closes its end.
    conn.on('end', () => {
      if (!started) start();
    });
    // A caller that went away (killed by its runtime's timeout) gets no answer; the call itself finishes.
    conn.on('error', () => undefined);
    conn.on('close', () => this.sockets.delete(conn));
  }

  private async answer(raw: Buffer): Promise<ForwardAnswer> {
    const started = performance.now();
    let req: ForwardRequest;
    try {
      req = parseRequest(raw);
    } catch (e) {
      const reason = `bad request: ${(e as Error).message}`;
      this.opts.onCall?.({ plugin: '', command: '', containerId: '', outcome: 'bad-request', reason, ms: performance.now() - started });
      return { served: false, reason };
    }
    const event = { plugin: req.plugin, command: req.env.CNI_COMMAND ?? '', containerId: req.env.CNI_CONTAINERID ?? '' };
    const refuse = (reason: string): ForwardAnswer => {
      this.opts.onCall?.({ ...event, outcome: 'refused', reason, ms: performance.now() - started });
      return { served: false, reason };
    };
    if (req.protocol !== FORWARD_PROTOCOL) return refuse(`protocol ${req.protocol}, the server speaks ${FORWARD_PROTOCOL}`);
    const mismatch = viewMismatch(this.own, req.caller);
    if (mismatch) return refuse(mismatch);
    const loading = this.opts.loadPlugin(req.plugin);
    if (!loading) return refuse(`the server has no plugin "${req.plugin}"`);
    const outcome = await invoke(await loading, req.env, Buffer.from(req.stdin, 'base64'), req.caller.executables);
    // Calls overlap here, so per-call timings mean nothing; TWILL_CNI_TRACE in the server's environment must not pile them up.
    clearTrace();
    const { code, stdout } = renderOutcome(outcome);
    const ms = performance.now() - started;
    this.opts.onCall?.({ ...event, outcome: 'served', code, ...(outcome.ok ? {} : { reason: outcome.error.message }), ms });
    return { served: true, code, stdout, ms };
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

/** Removes a socket file no server answers on; refuses when one does. Anything but a socket is left alone (listen then fails). */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) return;
  } catch {
    return;
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.on('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
  if (live) throw new CniServerError(`another server is serving CNI calls at ${path}`);
  unlinkSync(path);
}
