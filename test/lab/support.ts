// Running `twill lab` as a user does (the real CLI, as a process), and what a
// lab must leave behind once it is down: nothing.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { BIN_TWILL } from '../support/agent.js';
import { RUN_PREFIX } from '../support/hosts.js';
import { listNetns } from '../../src/kernel/index.js';
import { isLabNetns, labDir } from '../../src/lab/layout.js';
import type { LabState } from '../../src/lab/state.js';
import type { CheckReport } from '../../src/lab/check.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function twillLab(args: string[], timeoutMs = 180_000): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN_TWILL, 'lab', ...args], { timeout: timeoutMs, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

export async function mustLab(args: string[]): Promise<string> {
  const r = await twillLab(args);
  if (r.code !== 0) throw new Error(`twill lab ${args.join(' ')} failed (${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

let count = 0;
/** A lab name no other run or test uses: the run's prefix, this process, a counter. */
export function uniqueLabName(what: string): string {
  return `${RUN_PREFIX}-${process.pid}-${count++}-${what}`.slice(0, 40);
}

export interface Status {
  nodes: { name: string; netns: string; subnet: string; publicIp: string }[];
  pods: { name: string; node: string; netns: string; ip: string }[];
}

export const status = async (lab: string) => JSON.parse(await mustLab(['status', '--name', lab, '--json'])) as Status;

export async function check(lab: string): Promise<{ code: number; report: CheckReport; stderr: string }> {
  const r = await twillLab(['check', '--name', lab, '--json']);
  return { code: r.code, report: JSON.parse(r.stdout || '{"rows":[],"failures":-1}') as CheckReport, stderr: r.stderr };
}

export const labState = (lab: string) => JSON.parse(readFileSync(`${labDir(lab)}/state.json`, 'utf8')) as LabState;

/** Every trace a lab could leave: namespaces by name, processes naming its dir, the dir. */
export function leftovers(lab: string): string[] {
  const out = listNetns().filter((n) => isLabNetns(lab, n)).map((n) => `namespace ${n}`);
  const dir = labDir(lab);
  if (existsSync(dir)) out.push(`directory ${dir}`);
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(`${dir}/`)) out.push(`process ${pid}: ${cmd.split('\0').join(' ')}`);
  }
  return out;
}
