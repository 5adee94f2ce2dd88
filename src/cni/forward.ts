// The warm path: a plugin process hands its call to a long-running twill (the
// agent with --cni-socket, or `twill cni serve`) over a unix socket, and prints
// the answer. The work then runs in a process whose code is loaded and compiled
// already; the plugin process only pays for its own start. When nothing serves,
// or the server cannot see what the caller sees, the plugin runs the call
// itself: the warm path is never needed for a call to work.
import { statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { identityOf, ownExecutables } from './delegate.js';
import { CniError, ErrorCode } from './errors.js';
import type { Env } from './env.js';

/** Where plugins look for a server unless TWILL_CNI_SOCKET says otherwise. */
export const DEFAULT_CNI_SOCKET = '/run/twill/cni.sock';
export const CNI_SOCKET_ENV = 'TWILL_CNI_SOCKET';
export const FORWARD_PROTOCOL = 1;
/** Largest request or answer either side reads (a config with a big prevResult is a few kB). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** The variables a call is made of; anything else in the plugin's environment stays with it. */
export const CNI_VARIABLES = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'] as const;

/**
 * What the server needs to give the same answer the caller would: the same
 * files (mount namespace), the same network (network namespace), the same
 * relative paths (cwd), and the same twill.
 */
export interface CallerView {
  mountNs: string;
  netNs: string;
  cwd: string;
  /** twill's version: a server of another version does not serve (its plugin code may differ). */
  twill: string;
  /** Identities (dev:ino) of the caller's executable: a delegate in CNI_PATH that is one of them runs in-process. */
  executables: string[];
}

export interface ForwardRequest {
  protocol: number;
  /** The plugin type the caller was run as. */
  plugin: string;
  env: Partial<Record<(typeof CNI_VARIABLES)[number], string>>;
  /** The config, base64. */
  stdin: string;
  caller: CallerView;
}

// Both ways, one JSON document ended by a newline (JSON.stringify writes none
// inside): each side acts as soon as the newline arrives, without waiting for
// the other to close its end.

export type ForwardAnswer =
  | { served: true; code: number; stdout: string; /** ms the server spent */ ms: number }
  | { served: false; reason: string };

/** The socket to try: TWILL_CNI_SOCKET (empty or "off": none), else the default. */
export function cniSocketPath(env: Env): string | null {
  const v = env[CNI_SOCKET_ENV];
  if (v === undefined) return DEFAULT_CNI_SOCKET;
  if (v === '' || v === 'off') return null;
  return v;
}

/** The call as it goes over the socket (pure: the snapshot's warm-up runs it). */
export function forwardRequest(plugin: string, env: Env, stdin: Buffer, caller: CallerView): ForwardRequest {
  const vars: ForwardRequest['env'] = {};
  for (const k of CNI_VARIABLES) {
    const v = env[k];
    if (v !== undefined) vars[k] = v;
  }
  return { protocol: FORWARD_PROTOCOL, plugin, env: vars, stdin: stdin.toString('base64'), caller };
}

/** The working directory; a removed one matches no server's (the plugin then runs the call itself). */
function currentDir(): string {
  try {
    return process.cwd();
  } catch {
    return '(removed)';
  }
}

/** This process's view; the network namespace is the calling thread's. */
export function callerView(twill: string): CallerView {
  return {
    mountNs: identityOf('/proc/self/ns/mnt') ?? 'unknown',
    netNs: identityOf('/proc/thread-self/ns/net') ?? 'unknown',
    cwd: currentDir(),
    twill,
    executables: ownExecutables(),
  };
}

/** Why a server with view `own` should not serve a caller with view `caller` (null: it should). */
export function viewMismatch(own: CallerView, caller: CallerView): string | null {
  if (caller.twill !== own.twill) return `the caller is twill ${caller.twill}, the server twill ${own.twill}`;
  if (caller.mountNs !== own.mountNs) return 'the caller is in another mount namespace (the server would not see its files)';
  if (caller.netNs !== own.netNs) return 'the caller is in another network namespace';
  if (caller.cwd !== own.cwd) return `the caller runs in ${caller.cwd}, the server in ${own.cwd}`;
  return null;
}

/**
 * Sends the call (made by `makeRequest`, only when a socket is there) to the
 * server at `socket`. Resolves null when no server is there (the caller then
 * runs the call itself). Once the server has the call, losing it is an error
 * (code 11): the call may have been half done, and running it again here
 * could not know.
 */
export async function forwardCall(socket: string, makeRequest: () => ForwardRequest): Promise<ForwardAnswer | null> {
  // A missing socket is the common case on a node without a server: no connect, no request.
  try {
    if (!statSync(socket).isSocket()) return null;
  } catch {
    return null;
  }
  const request = makeRequest();
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    const chunks: Buffer[] = [];
    let size = 0;
    let connected = false;
    let settled = false;
    const answer = () => {
      settled = true;
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(parseAnswer(text));
      } catch (e) {
        reject(lost(socket, request, text.trim() === '' ? 'the server closed the connection without an answer' : (e as Error).message));
      }
    };
    conn.on('connect', () => {
      connected = true;
      conn.end(`${JSON.stringify(request)}\n`);
    });
    conn.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_MESSAGE_BYTES) conn.destroy(new Error(`answer larger than ${MAX_MESSAGE_BYTES} bytes`));
      else chunks.push(d);
      if (!settled && d.includes(0x0a)) answer();
    });
    conn.on('error', (e: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      // Refused, gone, not ours to use: no server, the plugin runs the call itself.
      if (!connected) resolve(null);
      else reject(lost(socket, request, e.message));
    });
    conn.on('end', () => {
      if (!settled) answer();
    });
  });
}

function lost(socket: string, request: ForwardRequest, why: string): CniError {
  return new CniError(
    ErrorCode.TryAgainLater,
    `lost the CNI ${request.env.CNI_COMMAND ?? ''} call handed to the twill server at ${socket}: ${why}`,
    `the call may be partly done; the runtime retries it (set ${CNI_SOCKET_ENV}=off to run plugins without the server)`,
  );
}

/** The server's answer (exported for the snapshot's warm-up). */
export function parseAnswer(text: string): ForwardAnswer {
  const a = JSON.parse(text) as Partial<{ served: boolean; code: number; stdout: string; ms: number; reason: string }>;
  if (a.served === true && typeof a.code === 'number' && typeof a.stdout === 'string') return { served: true, code: a.code, stdout: a.stdout, ms: typeof a.ms === 'number' ? a.ms : 0 };
  if (a.served === false) return { served: false, reason: String(a.reason ?? '') };
  throw new Error(`not an answer: ${text.slice(0, 200)}`);
}
