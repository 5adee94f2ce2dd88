import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { Netns } from '../kernel/index.js';
import { FirewallError, whereText } from './types.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** null when the process was killed (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
}

export interface ExecOptions {
  /** null: the current namespace. */
  netns: Netns | null;
  /** Written to stdin. Fine for iptables-restore; not for `nft -f -` (it cannot open a socketpair as /dev/stdin). */
  input?: string;
  timeoutMs?: number;
}

// iptables -w waits for the xtables lock without a limit; a stuck holder must not hang a CNI call forever.
const DEFAULT_TIMEOUT_MS = 60_000;
const SHOWN_ARG_MAX = 160;

const shellWord = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** The command line as a person would type it, long arguments (nft JSON) shortened. */
export function commandText(cmd: string, args: readonly string[]): string {
  return [cmd, ...args]
    .map((a) => (a.length > SHOWN_ARG_MAX ? `${a.slice(0, SHOWN_ARG_MAX)}…(${a.length} chars)` : a))
    .map(shellWord)
    .join(' ');
}

function start(cmd: string, args: readonly string[], opts: ExecOptions): ChildProcess {
  const go = () =>
    spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      // Predictable messages to match on ("No such file or directory").
      env: { ...process.env, LC_ALL: 'C' },
    });
  // The fork happens synchronously inside run(), on the thread that is in the
  // namespace, so the child starts there (verified: the child's /proc/self/ns/net).
  return opts.netns ? opts.netns.run(go) : go();
}

/** The command could not run at all (missing, not executable, ...): the error names it and where. */
function cannotRun(cmd: string, args: readonly string[], where: string | null, e: NodeJS.ErrnoException): FirewallError {
  const why = e.code === 'ENOENT' ? `${cmd} is not installed (not found in PATH)` : e.message;
  return new FirewallError(`cannot run ${commandText(cmd, args)} in ${whereText(where)}: ${why}`, commandText(cmd, args), where);
}

let blocking = false;

/**
 * For a CNI plugin process, which runs one command and nothing beside it: helpers
 * are then waited for with spawnSync. In a process that has just started, that
 * costs each helper ~5 ms less than a child driven by the event loop (pipes,
 * streams and their cold code); a long-running process (the agent) never calls it.
 */
export function useBlockingExec(): void {
  blocking = true;
}

function execBlocking(cmd: string, args: readonly string[], opts: ExecOptions): ExecResult {
  const where = opts.netns?.name ?? null;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const go = () =>
    spawnSync(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
      timeout: timeoutMs,
      maxBuffer: 256 << 20,
      ...(opts.input === undefined ? {} : { input: opts.input }),
    });
  let r: ReturnType<typeof go>;
  try {
    r = opts.netns ? opts.netns.run(go) : go();
  } catch (e) {
    throw cannotRun(cmd, args, where, e as NodeJS.ErrnoException);
  }
  const code = (r.error as NodeJS.ErrnoException | undefined)?.code;
  // EPIPE: it exited without reading all its input (a bad line, say); its status and stderr say why, as on the async path.
  if (r.error && code !== 'ETIMEDOUT' && !(code === 'EPIPE' && r.status !== null)) throw cannotRun(cmd, args, where, r.error);
  return { stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), code: r.status, signal: r.signal, timedOut: code === 'ETIMEDOUT' };
}

/**
 * Runs a command inside a namespace and collects its output. Resolves whatever the
 * exit code; rejects (FirewallError) only when the command could not run at all.
 */
export function execIn(cmd: string, args: readonly string[], opts: ExecOptions): Promise<ExecResult> {
  if (blocking) {
    try {
      return Promise.resolve(execBlocking(cmd, args, opts));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }
  const where = opts.netns?.name ?? null;
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = start(cmd, args, opts);
    } catch (e) {
      reject(cannotRun(cmd, args, where, e as NodeJS.ErrnoException));
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    // Not spawn's own `timeout`: it stays armed, holding the process open, when the program is missing.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(cannotRun(cmd, args, where, e));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code, signal, timedOut });
    });
    if (opts.input !== undefined && child.stdin) {
      // A command that exits without reading (bad option) closes the pipe: its exit status tells why.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** Like execIn, but a non-zero exit is a FirewallError with the command, the namespace and stderr. */
export async function execChecked(what: string, cmd: string, args: readonly string[], opts: ExecOptions): Promise<ExecResult> {
  const r = await execIn(cmd, args, opts);
  if (r.code === 0) return r;
  const where = opts.netns?.name ?? null;
  const text = commandText(cmd, args);
  const status = r.timedOut
    ? `did not finish in ${(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000} s${cmd.includes('tables') ? ' (is another process holding the xtables lock?)' : ''}`
    : r.code === null
      ? `was killed by ${r.signal ?? 'a signal'}`
      : `exited with ${r.code}`;
  const stderr = r.stderr.trim();
  throw new FirewallError(`${what} in ${whereText(where)}: \`${text}\` ${status}${stderr ? `: ${stderr}` : ''}`, text, where, stderr, r.code);
}
