// The lab's background processes (one agent per node, etcd): started detached
// inside their namespace, with their output in a log file under the lab dir, so
// they outlive `twill lab up`. Each is recognised by a marker on its command line
// (a path under the lab dir), never by pid alone: a pid can be reused.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { labDir } from './layout.js';

export interface Daemon {
  pid: number;
  /** Resolves when the process exits while we are still watching it (a failed start). */
  exited: Promise<number | null>;
}

export function startDaemon(netns: string, argv: string[], logPath: string): Daemon {
  const log = openSync(logPath, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], {
      detached: true,
      stdio: ['ignore', log, log],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    if (child.pid === undefined) throw new Error(`cannot start ${argv[0]} in ${netns} (see ${logPath})`);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.unref();
    return { pid: child.pid, exited };
  } finally {
    closeSync(log);
  }
}

function cmdline(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return null;
  }
}

/** Gone, or a zombie waiting for its parent to reap it (it holds nothing any more). */
function isGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** True when `pid` is alive and its command line carries `marker` (a lab path). */
export function isOurs(pid: number, marker: string): boolean {
  const args = cmdline(pid);
  return args !== null && !isGone(pid) && args.some((a) => a === marker || a.startsWith(`${marker}/`));
}

/** Every live process whose command line names a path inside this lab's dir: agents and etcd, also ones no state file recorded. */
export function findLabProcesses(lab: string): number[] {
  const dir = labDir(lab);
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const args = cmdline(pid);
    if (args && !isGone(pid) && args.some((a) => a === dir || a.startsWith(`${dir}/`) || a.endsWith(`:${dir}/leases.db`))) found.push(pid);
  }
  return found;
}

/** SIGTERM, then SIGKILL after graceMs; resolves once the process is gone. */
export async function stopProcess(pid: number, graceMs = 5000): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const end = Date.now() + graceMs;
  while (!isGone(pid)) {
    if (Date.now() > end) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
      await sleep(50);
      if (Date.now() > end + 2000) throw new Error(`process ${pid} (${(cmdline(pid) ?? []).join(' ')}) does not go away after SIGKILL`);
      continue;
    }
    await sleep(25);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The log from `offset` on (what the current run of a daemon wrote). */
export function readLog(path: string, offset = 0): string {
  if (!existsSync(path)) return '';
  return readFileSync(path, 'utf8').slice(offset);
}

export function logSize(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

/** The last lines of a log, for an error message. */
export function logTail(path: string, offset = 0, lines = 15): string {
  return readLog(path, offset).trimEnd().split('\n').slice(-lines).join('\n');
}
