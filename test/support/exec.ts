import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Runs a command (the oracle: ip, bridge, nft...) and returns stdout; throws with stderr. */
export async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** `ip -j [-n NETNS] ARGS` parsed. */
export async function ipJson<T = Record<string, unknown>[]>(netns: string | null, args: string[]): Promise<T> {
  const out = await run('ip', [...(netns ? ['-n', netns] : []), '-j', ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

/** `bridge -j [-n NETNS] ARGS` parsed. */
export async function bridgeJson<T = Record<string, unknown>[]>(netns: string | null, args: string[]): Promise<T> {
  const out = await run('bridge', [...(netns ? ['-n', netns] : []), '-j', ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}
