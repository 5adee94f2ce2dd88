import { closeSync, existsSync, fstatSync, openSync, readdirSync, statSync } from 'node:fs';
import { netnsAddon } from './native.js';
import { KernelError, invalidArgument } from './errors.js';

export const NETNS_RUN_DIR = '/run/netns';

const nameCtx = (op: string, name: string) => ({ op, subject: `netns "${name}"` });

function checkNetnsName(op: string, name: string): void {
  if (name.length === 0 || name.length > 255 || name.includes('/') || name === '.' || name === '..' || /\s|\0/.test(name)) {
    throw invalidArgument(nameCtx(op, name), 'a namespace name must be 1 to 255 characters without "/", spaces or NUL, and not "." or ".."');
  }
}

function fromSystemError(op: string, subject: string, e: unknown): KernelError {
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? 'EUNKNOWN';
  const kind = code === 'EEXIST' ? 'exists' : code === 'ENOENT' ? 'not-found' : code === 'EPERM' || code === 'EACCES' ? 'permission' : 'other';
  return new KernelError(kind, code, err.errno ?? 0, { op, subject }, err.message);
}

/**
 * An open network namespace. `run` executes synchronous code with the calling
 * thread inside it: sockets and sysctl files opened there stay bound to it.
 */
export class Netns {
  /** Identity of the namespace (device:inode of its nsfs file). */
  readonly key: string;
  private fdValue: number;

  constructor(readonly name: string, readonly path: string, fd: number) {
    this.fdValue = fd;
    const st = fstatSync(fd);
    this.key = `${st.dev}:${st.ino}`;
  }

  get fd(): number {
    if (this.fdValue < 0) throw new Error(`netns "${this.name}" is closed`);
    return this.fdValue;
  }

  /** Runs fn (synchronous only: anything it awaits runs back in the original namespace). */
  run<T>(fn: () => T): T {
    return netnsAddon().runInNetns(this.fd, fn);
  }

  close(): void {
    if (this.fdValue >= 0) closeSync(this.fdValue);
    this.fdValue = -1;
  }
}

/** Opens a named namespace (/run/netns/NAME) or any nsfs path (/proc/PID/ns/net). */
export function openNetns(nameOrPath: string): Netns {
  const isPath = nameOrPath.startsWith('/');
  if (!isPath) checkNetnsName('open', nameOrPath);
  const path = isPath ? nameOrPath : `${NETNS_RUN_DIR}/${nameOrPath}`;
  try {
    return new Netns(nameOrPath, path, openSync(path, 'r'));
  } catch (e) {
    throw fromSystemError('open', `netns "${nameOrPath}"`, e);
  }
}

/** Creates /run/netns/NAME as `ip netns add` does, and opens it. */
export function createNetns(name: string): Netns {
  checkNetnsName('create', name);
  try {
    netnsAddon().createNetns(name);
  } catch (e) {
    throw fromSystemError('create', `netns "${name}"`, e);
  }
  return openNetns(name);
}

/** Unpins /run/netns/NAME; its links go away once no process or fd holds it. */
export function deleteNetns(name: string): void {
  checkNetnsName('delete', name);
  try {
    netnsAddon().deleteNetns(name);
  } catch (e) {
    throw fromSystemError('delete', `netns "${name}"`, e);
  }
}

export function netnsExists(name: string): boolean {
  checkNetnsName('look up', name);
  return existsSync(`${NETNS_RUN_DIR}/${name}`);
}

export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_RUN_DIR).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** A network namespace found on the machine: pinned by name under /run/netns, or held by processes. */
export interface NetnsRef {
  /** The name under /run/netns, else `pid:<lowest pid>` of the processes in it. */
  name: string;
  /** A path that opens it (/run/netns/NAME or /proc/PID/ns/net). */
  path: string;
  /** Identity (device:inode of its nsfs file), as Netns.key and Handle.nsKey. */
  key: string;
  /** Processes inside it (empty for a pinned namespace no process runs in). */
  pids: number[];
}

/** The identity of the namespace at an nsfs path, or null when it is gone (a process exited). */
export function netnsKeyOf(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/**
 * Every network namespace this process can see: the named ones, then those only
 * processes hold (a pod sandbox's pause process, for example), one entry per
 * namespace. Reads /run/netns and /proc; changes nothing.
 */
export function listAllNetns(): NetnsRef[] {
  const byKey = new Map<string, NetnsRef>();
  for (const name of listNetns()) {
    const path = `${NETNS_RUN_DIR}/${name}`;
    const key = netnsKeyOf(path);
    if (key !== null && !byKey.has(key)) byKey.set(key, { name, path, key, pids: [] });
  }
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    entries = [];
  }
  const pids = entries.filter((e) => /^\d+$/.test(e)).map(Number).sort((a, b) => a - b);
  for (const pid of pids) {
    const path = `/proc/${pid}/ns/net`;
    const key = netnsKeyOf(path);
    if (key === null) continue;
    const known = byKey.get(key);
    if (known) known.pids.push(pid);
    else byKey.set(key, { name: `pid:${pid}`, path, key, pids: [pid] });
  }
  return [...byKey.values()];
}

/** Opens a namespace found by listAllNetns, under its name there. */
export function openNetnsRef(ref: NetnsRef): Netns {
  try {
    return new Netns(ref.name, ref.path, openSync(ref.path, 'r'));
  } catch (e) {
    throw fromSystemError('open', `netns "${ref.name}"`, e);
  }
}
