// Where twill's native code comes from. Three ways to run, one loader:
//  - compiled by tsc (dist/src/...): the addons in the checkout;
//  - bundled (dist/twill.cjs, scripts/bundle.mjs): the same files, found from the bundle;
//  - the single executable (scripts/build-sea.mjs): the addons are SEA assets, written
//    once to a cache directory (named by their SHA-256) and dlopen'ed from there.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { getAsset, getRawAsset, isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';

// Set by scripts/bundle.mjs (esbuild `define`); undeclared in the tsc build.
declare const TWILL_BUNDLE: boolean | undefined;

interface NetnsAddon {
  runInNetns<T>(fd: number, fn: () => T): T;
  createNetns(name: string): void;
  deleteNetns(name: string): void;
  tryLock(fd: number, exclusive: boolean): boolean;
  unlock(fd: number): void;
  /** Replaces the process (same pid and environment); returns only by throwing. */
  execv(file: string, argv: string[]): never;
}

/** The native addons twill loads: its own, and the netlink package's socket binding. */
export type AddonName = 'twill_netns' | 'netlink';

/** The SEA asset that lists the embedded addons (written by scripts/build-sea.mjs). */
export const SEA_NATIVE_MANIFEST = 'native.json';

export interface SeaNativeEntry {
  /** The asset's key. */
  asset: string;
  sha256: string;
  size: number;
}

/** Where SEA addons are written, in order of preference (the first usable one wins). */
export function nativeCacheDirs(): string[] {
  const override = process.env.TWILL_NATIVE_DIR;
  if (override) return [override];
  return ['/var/lib/twill/native', join(tmpdir(), `twill-native-${process.geteuid?.() ?? 'user'}`)];
}

/** The checkout this code runs from: <root>/dist/twill.cjs, or <root>/dist/src/kernel/native.js (not in a SEA). */
export function packageRoot(): string {
  return fileURLToPath(new URL(typeof TWILL_BUNDLE !== 'undefined' ? '../' : '../../../', import.meta.url));
}

function loadFromCheckout(name: AddonName): unknown {
  const root = packageRoot();
  const require = createRequire(join(root, 'package.json'));
  if (name === 'twill_netns') {
    const path = join(root, 'native', 'build', 'Release', 'twill_netns.node');
    try {
      return require(path);
    } catch (e) {
      throw new Error(`cannot load twill's netns addon at ${path} (run "npm ci" to build it): ${(e as Error).message}`);
    }
  }
  // As netlink itself does: node-gyp-build picks the prebuild (or a local build) for this machine.
  const dir = dirname(require.resolve('netlink/package.json'));
  const nodeGypBuild = createRequire(join(dir, 'package.json'))('node-gyp-build') as (dir: string) => unknown;
  return nodeGypBuild(dir);
}

/** A directory we can trust: ours, not a symlink, writable by nobody else. */
function trusted(path: string): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st || st.isSymbolicLink()) return false;
  return st.uid === process.geteuid?.() && (st.mode & 0o022) === 0;
}

/** The addon's file in a cache directory, written (atomically) if it is not there yet. */
function cachedAddon(base: string, name: AddonName, entry: SeaNativeEntry, verify: boolean): string {
  const dir = join(base, entry.sha256);
  const file = join(dir, `${name}.node`);
  if (!trusted(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!trusted(base) || !trusted(dir)) throw new Error(`${dir} is not owned by this user, or is writable by others`);
  // Written before (by this or another process)? The directory is named by the content's
  // SHA-256, only we can write it, and a file appears there only whole (rename): its size
  // is checked at every start, its hash only when loading it failed (`verify`): hashing
  // costs a plugin start a crypto init and a read. A damaged file is replaced.
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (st?.isFile() && st.size === entry.size && trusted(file) && (!verify || createHash('sha256').update(readFileSync(file)).digest('hex') === entry.sha256)) return file;
  const tmp = `${file}.tmp.${process.pid}.${Math.random().toString(36).slice(2)}`;
  const fd = openSync(tmp, 'wx', 0o500);
  try {
    writeFileSync(fd, new Uint8Array(getRawAsset(entry.asset) as ArrayBuffer));
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, file);
  return file;
}

function loadFromSea(name: AddonName): unknown {
  const manifest = JSON.parse(getAsset(SEA_NATIVE_MANIFEST, 'utf8')) as Partial<Record<AddonName, SeaNativeEntry>>;
  const entry = manifest[name];
  if (!entry) throw new Error(`this twill executable has no ${name} addon embedded`);
  const failures: string[] = [];
  for (const base of nativeCacheDirs()) {
    // A directory may be unusable (read-only, someone else's, mounted noexec): try the next.
    try {
      const module = { exports: {} };
      try {
        process.dlopen(module, cachedAddon(base, name, entry, false));
      } catch {
        process.dlopen(module, cachedAddon(base, name, entry, true));
      }
      return module.exports;
    } catch (e) {
      failures.push(`${base}: ${(e as Error).message}`);
    }
  }
  throw new Error(`cannot load twill's ${name} addon from a cache directory (set TWILL_NATIVE_DIR): ${failures.join('; ')}`);
}

const loaded = new Map<AddonName, unknown>();

/** Loads a native addon once, from wherever this process runs from. */
export function loadAddon(name: AddonName): unknown {
  let addon = loaded.get(name);
  if (addon === undefined) {
    addon = isSea() ? loadFromSea(name) : loadFromCheckout(name);
    loaded.set(name, addon);
  }
  return addon;
}

/** The native addon (native/netns.c: setns, netns create/delete, flock), loaded on first use. */
export function netnsAddon(): NetnsAddon {
  return loadAddon('twill_netns') as NetnsAddon;
}
