// Builds twill's single executable (Node SEA): dist/sea/twill, a copy of this
// Node binary with the bundled CLI, a V8 startup snapshot of it, and both native
// addons injected. It needs no Node and no node_modules on the machine that runs
// it. `twill cni install` installs it under the plugin names (hard links).
//
//   node scripts/build-sea.mjs [--if-stale] [--no-snapshot] [--no-strip] [--quiet] [--print-path]
//
// --if-stale     do nothing when dist/sea/twill was built from the same inputs (the
//                bundle of today's src/, the addons, this Node, the options);
//                `twill cni install` runs this before it installs from a checkout.
// --no-snapshot  no `useSnapshot`: the bundle is compiled and evaluated at every start
//                (~20 ms slower; see README.md, "CNI plugins").
// --no-strip     keep Node's debug symbols (+13 MB).
//
// Steps: esbuild bundle (scripts/bundle.mjs) → sea-config.json with the addons as
// assets (+ native.json: names, sizes and SHA-256, read by src/kernel/native.ts) →
// node --experimental-sea-config (runs the bundle once to take the snapshot) →
// copy of process.execPath (stripped) → postject → rename into place.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { ROOT, bundleOptions } from './bundle.mjs';

export const SEA_DIR = join(ROOT, 'dist', 'sea');
export const SEA_BINARY = join(SEA_DIR, 'twill');
const STAMP = join(SEA_DIR, 'twill.stamp');
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const sha256 = (data) => createHash('sha256').update(data).digest('hex');
const shown = (path) => relative(process.cwd(), path) || path;

/** The native addons to embed, by the name src/kernel/native.ts loads them with. */
function addons() {
  const require = createRequire(join(ROOT, 'package.json'));
  const netlinkDir = dirname(require.resolve('netlink/package.json'));
  const nodeGypBuild = createRequire(join(netlinkDir, 'package.json'))('node-gyp-build');
  return {
    twill_netns: join(ROOT, 'native', 'build', 'Release', 'twill_netns.node'),
    // The prebuild (or local build) node-gyp-build picks for this machine, as netlink does.
    netlink: nodeGypBuild.path(netlinkDir),
  };
}

/** Runs a build step; its chatter is shown only when it fails (postject's LIEF warns about ELF notes: harmless). */
function quietly(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    throw new Error(`${[cmd, ...args].join(' ')} failed (${r.error?.message ?? `exit status ${r.status}`})`);
  }
}

function hasStrip() {
  try {
    execFileSync('strip', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function buildSea({ ifStale = false, snapshot = true, strip = true, log = console.error } = {}) {
  const started = Date.now();
  mkdirSync(SEA_DIR, { recursive: true });

  // 1. The bundle, in memory: its hash decides whether anything changed.
  const result = await esbuild.build({ ...bundleOptions(join(SEA_DIR, 'twill.cjs'), { snapshot }), write: false, sourcemap: false, metafile: false });
  const js = result.outputFiles.find((f) => f.path.endsWith('.cjs'));
  if (!js) throw new Error('esbuild produced no bundle');

  // 2. The addons, and the manifest native.ts reads.
  const addonFiles = {};
  const manifest = {};
  for (const [name, path] of Object.entries(addons())) {
    if (!existsSync(path)) throw new Error(`native addon ${name} is missing at ${path} (run "npm ci")`);
    const data = readFileSync(path);
    const asset = `${name}.node`;
    addonFiles[asset] = path;
    manifest[name] = { asset, sha256: sha256(data), size: data.length };
  }
  const manifestJson = JSON.stringify(manifest, null, 2) + '\n';

  const doStrip = strip && hasStrip();
  const node = statSync(process.execPath);
  const stamp = sha256(
    JSON.stringify({
      bundle: sha256(js.contents),
      manifest: manifestJson,
      node: [process.execPath, process.version, node.size, node.mtimeMs],
      options: { snapshot, strip: doStrip },
    }),
  );
  if (ifStale && existsSync(SEA_BINARY) && existsSync(STAMP) && readFileSync(STAMP, 'utf8').trim() === stamp) {
    return { path: SEA_BINARY, built: false };
  }
  log(`twill: building the single executable ${shown(SEA_BINARY)} (a few seconds)`);

  // Every intermediate file in a directory of this build's own: builds may run side by side.
  const work = mkdtempSync(join(SEA_DIR, '.build-'));
  const tmp = `${SEA_BINARY}.tmp.${process.pid}`;
  try {
    const main = join(work, 'twill.cjs');
    const manifestFile = join(work, 'native.json');
    const blob = join(work, 'twill.blob');
    const config = join(work, 'sea-config.json');
    writeFileSync(main, js.contents);
    writeFileSync(manifestFile, manifestJson);
    const seaConfig = {
      main,
      output: blob,
      disableExperimentalSEAWarning: true,
      useSnapshot: snapshot,
      assets: { ...addonFiles, 'native.json': manifestFile },
    };
    writeFileSync(config, JSON.stringify(seaConfig, null, 2));

    // 3. The SEA blob (with a snapshot, this runs the bundle once: see preload() in src/cli/main.ts).
    quietly(process.execPath, ['--experimental-sea-config', config]);

    // 4. A copy of this Node with the blob injected, renamed into place.
    if (doStrip) execFileSync('strip', ['--strip-all', '-o', tmp, process.execPath], { stdio: 'inherit' });
    else copyFileSync(process.execPath, tmp);
    chmodSync(tmp, 0o755);
    const postject = createRequire(import.meta.url).resolve('postject/dist/cli.js');
    quietly(process.execPath, [postject, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', FUSE]);
    renameSync(tmp, SEA_BINARY);
    writeFileSync(`${STAMP}.${process.pid}`, stamp + '\n');
    renameSync(`${STAMP}.${process.pid}`, STAMP);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(work, { recursive: true, force: true });
  }
  const mb = (statSync(SEA_BINARY).size / 1e6).toFixed(1);
  log(`twill: built ${shown(SEA_BINARY)} (${mb} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { path: SEA_BINARY, built: true };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const known = ['--if-stale', '--no-snapshot', '--no-strip', '--quiet', '--print-path'];
  const bad = args.filter((a) => !known.includes(a));
  if (bad.length) {
    console.error(`usage: node scripts/build-sea.mjs [${known.join('] [')}]\nunknown: ${bad.join(' ')}`);
    process.exit(2);
  }
  try {
    const { path } = await buildSea({
      ifStale: args.includes('--if-stale'),
      snapshot: !args.includes('--no-snapshot'),
      strip: !args.includes('--no-strip'),
      log: args.includes('--quiet') ? () => undefined : console.error,
    });
    if (args.includes('--print-path')) console.log(path);
  } catch (e) {
    console.error(`build-sea: ${e.message}`);
    process.exit(1);
  }
}
