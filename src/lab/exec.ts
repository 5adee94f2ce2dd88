// Running programs inside the lab's namespaces: the agents, the CNI plugins,
// and the probes of `check` (ping, a small Node TCP/UDP peer).
import { execFile } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

const BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Runs cmd inside a namespace (`ip netns exec`); never throws for a non-zero exit. */
export function execIn(netns: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'ip',
      ['netns', 'exec', netns, cmd, ...args],
      { env: { PATH: process.env.PATH ?? BASE_PATH, ...opts.env }, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number' && !err.killed) {
          reject(new Error(`cannot run ${cmd} in ${netns}: ${err.message}`));
          return;
        }
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr: err?.killed ? `${stderr}(killed after ${opts.timeoutMs ?? 30_000} ms)` : stderr });
      },
    );
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** execIn, throwing with the command and its output when it fails. */
export async function mustExecIn(netns: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<string> {
  const r = await execIn(netns, cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${netns} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Runs async jobs with at most `limit` at once (the machine may have 2 cores and neighbours). */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
