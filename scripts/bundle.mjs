// Bundles the twill CLI (src/cli/main.ts, with the multi-call dispatch) into one
// CommonJS file with esbuild: dist/twill.cjs, which bin/twill runs when it is
// there, and which scripts/build-sea.mjs embeds in the single executable.
//
//   node scripts/bundle.mjs [--outfile FILE]     (TWILL_NO_MINIFY=1: readable names, for CPU profiles)
//
// CommonJS, because a Node SEA runs its main script as CommonJS. Lazy imports
// (`await import('./x.js')`) become lazily initialised modules in the bundle:
// a plugin process evaluates only what it runs. Native addons are not bundled:
// src/kernel/native.ts loads them (from the checkout, or from the SEA's assets),
// and netlink's `node-gyp-build` call is replaced by a call into it.
import { readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE = join(ROOT, 'dist', 'twill.cjs');

const NATIVE_TS = join(ROOT, 'src', 'kernel', 'native.ts');
const AGENT_MODULES_TS = join(ROOT, 'src', 'agent', 'modules.ts');

/**
 * Required from node_modules at run time: the agent runs from a checkout, or from
 * the image, which installs them beside the single executable (scripts/build-image.sh).
 */
export const AGENT_ONLY_DEPENDENCIES = ['better-sqlite3', 'etcd3', 'pino', 'prom-client'];

/**
 * The agent's dependencies stay external, but a single executable's `require`
 * loads built-in modules only: each import of one becomes a stand-in that, in a
 * SEA, requires it from the directory the image installs it in (src/agent/modules.ts),
 * and elsewhere requires it as before (from the checkout's node_modules).
 */
const agentDependencies = {
  name: 'twill-agent-dependencies',
  setup(build) {
    const names = AGENT_ONLY_DEPENDENCIES.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
    build.onResolve({ filter: new RegExp(`^(${names})(/.*)?$`) }, (args) =>
      args.namespace === 'twill-agent-dependency' ? { path: args.path, external: true } : { path: args.path, namespace: 'twill-agent-dependency' },
    );
    build.onLoad({ filter: /.*/, namespace: 'twill-agent-dependency' }, (args) => ({
      resolveDir: ROOT,
      loader: 'js',
      contents: `module.exports = require('node:sea').isSea()
        ? require(${JSON.stringify(AGENT_MODULES_TS)}).requireAgentDependency(${JSON.stringify(args.path)})
        : require(${JSON.stringify(args.path)});`,
    }));
  },
};

/**
 * netlink's raw.js does `require('node-gyp-build')(__dirname + '/..')` when it is
 * first required; in a bundle __dirname is not its folder. This returns a stand-in
 * that loads the addon through native.ts on first use of the binding.
 */
const netlinkAddon = {
  name: 'twill-netlink-addon',
  setup(build) {
    build.onResolve({ filter: /^node-gyp-build$/ }, (args) => {
      if (!/[\\/]node_modules[\\/]netlink[\\/]/.test(args.importer)) {
        return { errors: [{ text: `node-gyp-build imported by ${args.importer}: only netlink's addon is known to the bundle` }] };
      }
      return { path: 'netlink', namespace: 'twill-addon' };
    });
    build.onLoad({ filter: /.*/, namespace: 'twill-addon' }, () => ({
      resolveDir: ROOT,
      loader: 'js',
      contents: `
        let binding;
        const load = () => (binding ??= require(${JSON.stringify(NATIVE_TS)}).loadAddon('netlink'));
        module.exports = function nodeGypBuild() {
          return new Proxy({}, { get: (_, key) => load()[key], has: (_, key) => key in load() });
        };`,
    }));
  },
};

/**
 * In the bundle, import.meta.url is the bundle's URL, and in the SEA the build's: a
 * module that finds files relative to itself must know (TWILL_BUNDLE, isSea()). Only
 * the files below do; another one using it fails the build rather than the product.
 */
const IMPORT_META_OK = new Set(['src/kernel/native.ts', 'src/cli/main.ts']);
const importMetaGuard = {
  name: 'twill-import-meta-guard',
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, (args) => {
      const contents = readFileSync(args.path, 'utf8');
      const file = relative(ROOT, args.path).split(sep).join('/');
      if (contents.includes('import.meta') && !IMPORT_META_OK.has(file)) {
        return { errors: [{ text: `${file} uses import.meta, which is not its own URL in the bundle or the SEA (see scripts/bundle.mjs)` }] };
      }
      return { contents, loader: 'ts' };
    });
  },
};

const ENTRY = `
  import { main } from './src/cli/main.ts';
  const run = () =>
    main(process.argv).catch((e) => {
      process.stderr.write('twill: ' + (process.env.TWILL_DEBUG ? e?.stack : e?.message ?? e) + '\\n');
      process.exitCode = 1;
    });
`;

// A SEA with useSnapshot: the script runs once at build time, preload() evaluates
// every module (and loads the built-ins they import), and each process starts from
// the heap it left. Nothing may do work at import time (read env, files, clocks):
// it would be frozen into the snapshot.
const SNAPSHOT_ENTRY = `
  import { startupSnapshot } from 'node:v8';
  import { preload } from './src/cli/main.ts';
  ${ENTRY}
  if (startupSnapshot.isBuildingSnapshot()) {
    preload();
    startupSnapshot.setDeserializeMainFunction(run);
  } else {
    run();
  }
`;

/** esbuild options for the bundle (also used by the SEA build, with write: false). */
export function bundleOptions(outfile = BUNDLE, { snapshot = false } = {}) {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  return {
    absWorkingDir: ROOT,
    stdin: {
      contents: snapshot ? SNAPSHOT_ENTRY : `${ENTRY}\nrun();\n`,
      resolveDir: ROOT,
      sourcefile: 'twill-entry.ts',
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile,
    minify: !process.env.TWILL_NO_MINIFY,
    sourcemap: 'linked',
    sourcesContent: false,
    legalComments: 'none',
    logLevel: 'warning',
    // esbuild leaves import.meta empty in CommonJS: import.meta.url becomes the bundle's
    // own URL, and code that finds files relative to it checks TWILL_BUNDLE (native.ts).
    define: {
      TWILL_BUNDLE: 'true',
      TWILL_VERSION: JSON.stringify(pkg.version),
      'import.meta.url': 'TWILL_IMPORT_META_URL',
    },
    banner: { js: 'var TWILL_IMPORT_META_URL = require("node:url").pathToFileURL(__filename).href;' },
    // The agent's dependencies stay in node_modules: native (better-sqlite3) or large
    // (etcd3 and its gRPC), and needed only by the long-running agent, never by a plugin
    // (agentDependencies marks them external, behind its stand-in).
    plugins: [netlinkAddon, agentDependencies, importMetaGuard],
    metafile: true,
  };
}

export async function bundle(outfile = BUNDLE) {
  const result = await esbuild.build(bundleOptions(outfile));
  return result;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const i = process.argv.indexOf('--outfile');
  const outfile = i > 0 ? process.argv[i + 1] : BUNDLE;
  const started = Date.now();
  const result = await bundle(outfile).catch(() => process.exit(1)); // esbuild printed why
  const inputs = Object.keys(result.metafile.inputs).length;
  console.log(`bundled ${inputs} modules into ${relative(ROOT, outfile)} in ${Date.now() - started} ms`);
}
