// Running another plugin (an IPAM plugin, a delegate), found in CNI_PATH as
// libcni finds it. When the executable found there is twill's own multi-call
// binary, the plugin runs in this process instead: same protocol, no second
// Node start. A reference binary found first is executed as usual.
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from './errors.js';
import { invoke } from './runner.js';
import { parseResult } from './result.js';
import type { CmdArgs, CniResult, Command } from './types.js';
import type { Env } from './env.js';

export function findInPath(type: string, path: string[]): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(type)) throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid plugin type ${JSON.stringify(type)}`);
  for (const dir of path) {
    const candidate = join(dir, type);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new CniError(ErrorCode.Internal, `failed to find plugin "${type}" in path [${path.join(' ')}]`);
}

/** dev:ino of a file (null when there is none). */
export function identityOf(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** The files this process runs from: the SEA binary, or node and bin/twill in a checkout. */
export function ownExecutables(): string[] {
  const ids = new Set<string>();
  for (const p of [process.execPath, process.argv[1]]) {
    const id = p ? identityOf(p) : null;
    if (id) ids.add(id);
  }
  return [...ids];
}

function isOwn(executable: string, own: readonly string[]): boolean {
  const id = identityOf(executable);
  return id !== null && own.includes(id);
}

function envFor(command: Command, cmd: CmdArgs): Env {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: cmd.containerId,
    CNI_NETNS: cmd.netns,
    CNI_IFNAME: cmd.ifname,
    CNI_ARGS: cmd.argsRaw,
    CNI_PATH: cmd.path.join(':'),
  };
}

function execPlugin(executable: string, env: Env, stdin: Buffer): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(executable, [], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.on('error', (e) => reject(new CniError(ErrorCode.Internal, `cannot run ${executable}: ${e.message}`)));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString('utf8') }));
    child.stdin.end(stdin);
  });
}

/** Runs `type` for command; resolves with its output (null for none), rejects with its CniError. */
async function run(type: string, command: Command, cmd: CmdArgs, stdin: Buffer): Promise<unknown> {
  const executable = findInPath(type, cmd.path);
  const env = envFor(command, cmd);
  const ownExes = cmd.ownExecutables ?? ownExecutables();
  if (isOwn(executable, ownExes)) {
    const { loadPlugin, pluginTypeOf } = await import('../plugins/registry.js');
    const own = pluginTypeOf(type);
    if (own) {
      const outcome = await invoke(await loadPlugin(own), env, stdin, cmd.ownExecutables);
      if (!outcome.ok) throw outcome.error;
      return outcome.output;
    }
  }
  const { code, stdout } = await execPlugin(executable, env, stdin);
  let parsed: unknown = null;
  if (stdout.trim()) {
    try {
      parsed = JSON.parse(stdout);
    } catch {
      throw new CniError(ErrorCode.DecodingFailure, `${type} ${command} printed something that is not JSON: ${stdout.slice(0, 200)}`);
    }
  }
  if (code !== 0) {
    const e = parsed as { code?: number; msg?: string; details?: string } | null;
    throw new CniError(e?.code ?? ErrorCode.Internal, e?.msg ?? `${type} ${command} failed with exit status ${code}`, e?.details ?? '');
  }
  return parsed;
}

export async function delegateAdd(type: string, cmd: CmdArgs, stdin: Buffer): Promise<CniResult> {
  return parseResult(await run(type, 'ADD', cmd, stdin), `${type} result`);
}

export async function delegateDel(type: string, cmd: CmdArgs, stdin: Buffer): Promise<void> {
  await run(type, 'DEL', cmd, stdin);
}

export async function delegateCheck(type: string, cmd: CmdArgs, stdin: Buffer): Promise<void> {
  await run(type, 'CHECK', cmd, stdin);
}

export async function delegateGc(type: string, cmd: CmdArgs, stdin: Buffer): Promise<void> {
  await run(type, 'GC', cmd, stdin);
}

export async function delegateStatus(type: string, cmd: CmdArgs, stdin: Buffer): Promise<void> {
  await run(type, 'STATUS', cmd, stdin);
}
