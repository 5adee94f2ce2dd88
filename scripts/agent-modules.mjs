// Copies the agent's own dependencies (scripts/bundle.mjs, AGENT_ONLY_DEPENDENCIES:
// outside the bundle and the single executable) and every package they need, from
// this checkout's node_modules, into DEST/node_modules, where the single executable
// looks for them (src/agent/modules.ts). Used by scripts/build-image.sh.
//
//   node scripts/agent-modules.mjs DEST
//
// Prints the native addons it copied (absolute paths, one a line), for ldd.
// Only what runs (and the licences): a package with a native addon (binding.gyp:
// better-sqlite3) keeps its compiled build/Release/*.node, not its C sources and
// object files (~27 MB); TypeScript sources and declarations, source maps and the
// documents other than licences are left out (~11 MB, half the files).
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_ONLY_DEPENDENCIES, ROOT } from './bundle.mjs';

const MODULES = join(ROOT, 'node_modules');

/** The folder Node's resolution finds package `name` in, from a package at `from` (its node_modules, then its parents'). */
function findPackage(from, name) {
  for (let dir = from; dir.startsWith(ROOT); dir = dirname(dir)) {
    const candidate = basename(dir) === 'node_modules' ? null : join(dir, 'node_modules', name);
    if (candidate && existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === ROOT) break;
  }
  return null;
}

/** Every package folder the agent's dependencies need, below node_modules. */
export function agentPackages() {
  const found = new Set();
  const visit = (from, name, optional) => {
    const dir = findPackage(from, name);
    if (!dir) {
      if (optional) return;
      throw new Error(`package ${name} (needed from ${relative(ROOT, from) || '.'}) is not in node_modules: run "npm ci"`);
    }
    if (found.has(dir)) return;
    found.add(dir);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dir, dep, false);
    // Optional and peer dependencies are used when installed (npm installs non-optional peers).
    for (const dep of Object.keys(pkg.optionalDependencies ?? {})) visit(dir, dep, true);
    for (const dep of Object.keys(pkg.peerDependencies ?? {})) visit(dir, dep, true);
  };
  for (const name of AGENT_ONLY_DEPENDENCIES) visit(ROOT, name, false);
  return [...found].sort();
}

/** Files Node never loads: TypeScript (Node 20 runs none), source maps, documents (licences are kept). */
const unused = (name) => /\.(ts|mts|cts|map)$/.test(name) || (/\.(md|markdown)$/i.test(name) && !/^licen[cs]e/i.test(name));

/** Copies one package (not its nested node_modules: those are packages of their own); returns its addons. */
function copyPackage(dir, dest) {
  const target = join(dest, relative(MODULES, dir));
  const native = existsSync(join(dir, 'binding.gyp'));
  const skipped = new Set([join(dir, 'node_modules'), ...(native ? ['build', 'deps', 'src'].map((d) => join(dir, d)) : [])]);
  cpSync(dir, target, { recursive: true, verbatimSymlinks: true, filter: (src) => !skipped.has(src) && !unused(basename(src)) });
  if (!native) return [];
  const release = join(dir, 'build', 'Release');
  // better-sqlite3 also builds a test_extension.node for its own tests.
  const addons = existsSync(release) ? readdirSync(release).filter((f) => f.endsWith('.node') && !f.startsWith('test_')) : [];
  if (addons.length === 0) throw new Error(`${relative(ROOT, dir)} has a binding.gyp but no compiled addon in build/Release: run "npm ci"`);
  mkdirSync(join(target, 'build', 'Release'), { recursive: true });
  for (const f of addons) cpSync(join(release, f), join(target, 'build', 'Release', f));
  return addons.map((f) => join(target, 'build', 'Release', f));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dest = process.argv[2];
  if (!dest || process.argv.length > 3) {
    console.error('usage: node scripts/agent-modules.mjs DEST   (copies the agent\'s packages into DEST/node_modules)');
    process.exit(2);
  }
  try {
    const modules = join(dest, 'node_modules');
    mkdirSync(modules, { recursive: true });
    const addons = agentPackages().flatMap((dir) => copyPackage(dir, modules));
    for (const a of addons) console.log(a);
  } catch (e) {
    console.error(`agent-modules: ${e.message}`);
    process.exit(1);
  }
}
