// `twill cni install --dir DIR [--prefix P]`: lays twill's CNI plugins into a
// runtime's plugin directory. One real file (the single executable, which needs
// no Node on the node), and the other names hard links to it: each keeps its own
// name (the multi-call dispatch reads it), and all share one inode (so a
// delegation from bridge to host-local in the same directory runs in-process).
import { execFileSync } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants, copyFileSync, fsyncSync, linkSync, openSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isSea } from 'node:sea';
import { packageRoot } from '../kernel/native.js';
import { PLUGIN_TYPES, pluginTypeOf, type PluginType } from '../plugins/registry.js';

/** A failure the user can fix (bad --dir, bad --prefix, no executable): printed without a stack. */
export class InstallError extends Error {}

export interface InstallOptions {
  dir: string;
  prefix?: string;
  /** The executable to install; default: seaExecutable(). */
  source?: string;
}

export interface Installed {
  dir: string;
  source: string;
  size: number;
  /** Installed paths, in PLUGIN_TYPES order. */
  files: { type: PluginType; path: string }[];
}

/**
 * The single executable to install: this process's own when it is one (a node
 * installs from an image's twill binary), else the checkout's dist/sea/twill,
 * built by scripts/build-sea.mjs when it is missing or older than the sources.
 */
export function seaExecutable(): string {
  if (isSea()) return process.execPath;
  const root = packageRoot();
  const script = join(root, 'scripts', 'build-sea.mjs');
  try {
    // Its progress (only when it builds) goes to our stderr; stdout is the path.
    return execFileSync(process.execPath, [script, '--if-stale', '--print-path'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch (e) {
    throw new InstallError(`cannot build twill's single executable with ${script} (it needs "npm ci", with the dev dependencies): ${(e as Error).message.split('\n')[0]}`);
  }
}

function checkDir(dir: string): void {
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InstallError(code === 'ENOENT' ? `--dir ${dir}: no such directory (create it first)` : `--dir ${dir}: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) throw new InstallError(`--dir ${dir}: not a directory`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new InstallError(`--dir ${dir}: not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** The installed name of each plugin type; refuses a prefix that would change what a name runs as. */
export function installNames(prefix: string): { type: PluginType; name: string }[] {
  if (prefix.includes('/') || prefix.includes('\0')) throw new InstallError(`--prefix ${JSON.stringify(prefix)}: must not contain "/"`);
  return PLUGIN_TYPES.map((type) => {
    const name = `${prefix}${type}`;
    if (pluginTypeOf(name) !== type) throw new InstallError(`--prefix ${JSON.stringify(prefix)}: "${name}" would not run as the ${type} plugin`);
    return { type, name };
  });
}

function fsyncPath(path: string, flags: string): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Temporary files an install that died left in DIR (~100 MB each): those of processes that are gone. */
function removeLeftovers(dir: string, names: string[]): void {
  const ours = new Set(['twill-cni', ...names]);
  for (const entry of readdirSync(dir)) {
    const m = /^\.(.+)\.tmp\.(\d+)$/.exec(entry);
    if (m && ours.has(m[1]!) && Number(m[2]) !== process.pid && !alive(Number(m[2]))) rmSync(join(dir, entry), { force: true });
  }
}

/**
 * Copies the executable into DIR under a temporary name, then, for every name,
 * hard-links it to another temporary name and renames that over DIR/<name>: a
 * rename replaces a running binary (writing into it would fail with ETXTBSY),
 * and a runtime never sees a half-written plugin.
 */
export function install(options: InstallOptions): Installed {
  const dir = resolve(options.dir);
  const names = installNames(options.prefix ?? '');
  checkDir(dir);
  const source = options.source ?? seaExecutable();
  const size = statSync(source).size;
  const tmp = join(dir, `.twill-cni.tmp.${process.pid}`);
  const temps = [tmp];
  const files: Installed['files'] = [];
  try {
    removeLeftovers(dir, names.map((n) => n.name));
    copyFileSync(source, tmp);
    chmodSync(tmp, 0o755);
    fsyncPath(tmp, 'r');
    for (const { type, name } of names) {
      const link = join(dir, `.${name}.tmp.${process.pid}`);
      temps.push(link);
      rmSync(link, { force: true });
      linkSync(tmp, link);
      renameSync(link, join(dir, name));
      files.push({ type, path: join(dir, name) });
    }
    rmSync(tmp);
    fsyncPath(dir, 'r');
  } catch (e) {
    for (const t of temps) rmSync(t, { force: true });
    const done = files.length ? ` (${files.map((f) => f.path).join(', ')} were already replaced)` : '';
    throw new InstallError(`cannot install into ${dir}: ${(e as Error).message}${done}`);
  }
  return { dir, source, size, files };
}

/** The CLI action: installs, then says what it did. */
export function cniInstall(options: InstallOptions, version: string): void {
  const done = install(options);
  const mb = (done.size / 1e6).toFixed(1);
  process.stdout.write(
    `installed twill ${version} CNI plugins into ${done.dir} (one ${mb} MB executable, hard-linked):\n` +
      done.files.map((f) => `  ${f.path}\n`).join(''),
  );
}
