// Running CNI plugins in tests: twill's (through bin/twill, as the multi-call
// binary would be installed) and the reference binaries, each as a real process
// inside a test host namespace, with the runtime's environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PLUGIN_TYPES } from '../../src/plugins/registry.js';
import type { TestHost } from './hosts.js';

const BIN_TWILL = fileURLToPath(new URL('../../../bin/twill', import.meta.url));

/** Reference plugins v1.10.0 (spec up to 1.1.0), built by `npm run peers`. */
export const REFERENCE_V1_10 = process.env.TWILL_PEER_CNI_DIR ?? '/var/cache/twill-peers/cni';
/** Debian's containernetworking-plugins 1.1.1 (spec up to 1.0.0). */
export const REFERENCE_DEBIAN = '/usr/lib/cni';

/** Fails (never skips) when a reference is missing, saying how to get it. */
export function requireReference(dir: string): string {
  for (const p of ['bridge', 'host-local', 'loopback']) {
    if (!existsSync(join(dir, p))) {
      throw new Error(
        dir === REFERENCE_DEBIAN
          ? `reference plugin ${join(dir, p)} is missing: apt-get install containernetworking-plugins (.ci/run does)`
          : `reference plugin ${join(dir, p)} is missing: run "npm run peers -- cni" (.ci/run does)`,
      );
    }
  }
  return dir;
}

/** A temporary CNI_PATH holding twill's plugins, as `twill cni install` lays them out. */
export function twillPluginDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'twill-cni-'));
  for (const t of PLUGIN_TYPES) symlinkSync(BIN_TWILL, join(dir, t));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json: Record<string, unknown> | null;
}

export interface CniEnv {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path?: string;
  /** Extra or overriding variables (undefined removes one). */
  extra?: Record<string, string | undefined>;
}

/** Runs `executable` as a runtime would, inside the namespace `hostNetns` (a test host). */
export function runPlugin(hostNetns: string, executable: string, env: CniEnv, stdin: string | object): Promise<PluginRun> {
  return collect(() => spawn('ip', ['netns', 'exec', hostNetns, executable], { env: runtimeEnv(env), stdio: ['pipe', 'pipe', 'pipe'] }), stdin);
}

/**
 * Runs `executable` inside `host`'s namespace without `ip netns exec` (which
 * also gives the process a mount namespace of its own): as a runtime on a node
 * runs a plugin, in the same mount namespace as a server it may hand its call to.
 */
export function runPluginIn(host: TestHost, executable: string, env: CniEnv, stdin: string | object): Promise<PluginRun> {
  return collect(() => host.netns.run(() => spawn(executable, [], { env: runtimeEnv(env), stdio: ['pipe', 'pipe', 'pipe'] })), stdin);
}

function runtimeEnv(env: CniEnv): Record<string, string> {
  const wanted: Record<string, string | undefined> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: env.command,
    CNI_CONTAINERID: env.containerId,
    CNI_NETNS: env.netns,
    CNI_IFNAME: env.ifname,
    CNI_ARGS: env.args,
    CNI_PATH: env.path,
    // Never a server this machine may run (/run/twill/cni.sock): the warm path's tests ask for theirs.
    TWILL_CNI_SOCKET: 'off',
    ...env.extra,
  };
  return Object.fromEntries(Object.entries(wanted).filter((e): e is [string, string] => e[1] !== undefined));
}

function collect(start: () => ChildProcess, stdin: string | object): Promise<PluginRun> {
  const input = typeof stdin === 'string' ? stdin : JSON.stringify(stdin);
  return new Promise((resolve, reject) => {
    const child = start();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString('utf8');
      let json: Record<string, unknown> | null = null;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : null;
      } catch {
        json = null;
      }
      resolve({ code: code ?? -1, stdout, stderr: Buffer.concat(err).toString('utf8'), json });
    });
    child.stdin!.end(input);
  });
}

function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(socket);
    c.on('connect', () => {
      c.end();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/** `twill cni serve` running in a test host's namespace (the warm path's server). */
export interface CniServeProcess {
  child: ChildProcess;
  /** Its log so far (JSON lines). */
  log(): string;
  exited: Promise<number | null>;
  /** SIGTERM; resolves with its exit status. */
  stop(): Promise<number | null>;
}

/**
 * Starts `twill cni serve --socket SOCKET` from a thread inside `host`'s
 * namespace (not through `ip netns exec`, which would give it a mount
 * namespace of its own: it would then serve no plugin), and waits until it
 * listens; fails with its log when it does not within 15 s.
 */
export async function startCniServe(host: TestHost, socket: string, logLevel = 'debug'): Promise<CniServeProcess> {
  const child = host.netns.run(() => spawn(process.execPath, [BIN_TWILL, 'cni', 'serve', '--socket', socket, '--log-level', logLevel], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const p: CniServeProcess = {
    child,
    log: () => log,
    exited,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`twill cni serve exited (${child.exitCode}): ${log}`);
    // Its own socket, not one a killed server left there: one that takes a connection.
    if (await accepts(socket)) return p;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`twill cni serve did not listen on ${socket} within 15 s: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
