import { closeSync, existsSync, fstatSync, openSync, readdirSync } from 'node:fs';
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
