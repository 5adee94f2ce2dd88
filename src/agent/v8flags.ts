// The agent is the one long-running twill process, and a node's memory is the
// pods'. V8's young generation grows to two 16 MiB semi-spaces after a burst of
// allocation (programming thousands of peers at start) and keeps them; 2 MiB
// semi-spaces cut the agent's resident memory from 114 to 95 MiB with 2,000 leases
// (docs/BENCHMARKS.md, agent). V8 takes the size only at start-up, so the agent
// restarts itself with the flag: execv keeps the pid that a supervisor (systemd,
// `ip netns exec`, a container runtime) knows.
import { isSea } from 'node:sea';
import { netnsAddon } from '../kernel/native.js';

export const AGENT_V8_FLAGS = ['--max-semi-space-size=2'];

/** Whether the running process was started with a young-generation size (by us, or by the user). */
function hasSemiSpaceFlag(): boolean {
  return process.execArgv.some((a) => a.startsWith('--max-semi-space-size')) || (process.env.NODE_OPTIONS ?? '').includes('--max-semi-space-size');
}

/**
 * Restarts the process with AGENT_V8_FLAGS unless it has them (or the user chose
 * a size). Returns only when no restart happens: already flagged, a single
 * executable, or execv failed (then the reason).
 */
export function restartWithAgentV8Flags(): string | null {
  if (hasSemiSpaceFlag() || process.env.TWILL_AGENT_NO_RESTART) return null;
  // A single executable takes no V8 flags: its arguments are all the program's (a
  // flag would reach twill's own parser), and its startup snapshot refuses to load
  // under V8 flags other than those it was built with (NODE_OPTIONS included). Its
  // argv[1] is the name it was started by ("twill" from PATH), never execPath.
  if (isSea()) return null;
  const script = process.argv[1];
  if (!script || script === process.execPath) return 'no script to restart with --max-semi-space-size=2: running with V8\'s default young generation';
  try {
    netnsAddon().execv(process.execPath, [process.execPath, ...AGENT_V8_FLAGS, ...process.execArgv, script, ...process.argv.slice(2)]);
  } catch (e) {
    return `could not restart with ${AGENT_V8_FLAGS.join(' ')}: ${(e as Error).message}`;
  }
  return null;
}
