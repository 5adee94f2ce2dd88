// The `twill explain` subcommand: reads this node's network (or a named
// namespace's), with the cluster's leases when --store names their store, and
// writes the explanation to stdout or --out. Its exit status tells a script
// whether anything is broken (see EXIT_* below).
import { existsSync, writeFileSync } from 'node:fs';
import { explain } from '../inspect/explain.js';
import type { Explanation } from '../inspect/model.js';
import { EXPLAIN_FORMATS, render, type ExplainFormat } from '../inspect/render.js';
import type { SubnetStore } from '../subnet/store.js';

/** No finding is an error (warnings and info do not count), or --exit-zero. */
export const EXIT_OK = 0;
/** At least one finding is an error. */
export const EXIT_ERRORS = 1;
/** Bad arguments: nothing was read. */
export const EXIT_USAGE = 2;

export interface ExplainCliOptions {
  netns?: string;
  format: string;
  out?: string;
  subnetFile?: string;
  cniDataDir?: string;
  /** local:PATH | etcd:URL[,URL], as `twill agent --store`. */
  store?: string;
  etcdEndpoints?: string;
  etcdPrefix?: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  exitZero?: boolean;
}

export class ExplainUsageError extends Error {}

/**
 * Opens the store the agents use, resolved exactly as `twill agent` resolves
 * its flags (imported only when asked for: explain without a store loads
 * neither SQLite nor an etcd client).
 */
async function openExplainStore(opts: ExplainCliOptions): Promise<SubnetStore | undefined> {
  if (opts.store === undefined && opts.etcdEndpoints === undefined) return undefined;
  const [{ resolveStore }, { InvalidArgumentError }, { DEFAULTS }] = await Promise.all([import('./agent-command.js'), import('commander'), import('../agent/options.js')]);
  let spec;
  try {
    spec = resolveStore({
      store: opts.store, etcdEndpoints: opts.etcdEndpoints, etcdPrefix: opts.etcdPrefix ?? DEFAULTS.etcdPrefix,
      etcdCafile: opts.etcdCafile, etcdCertfile: opts.etcdCertfile, etcdKeyfile: opts.etcdKeyfile,
      etcdUsername: opts.etcdUsername, etcdPassword: opts.etcdPassword, kubeSubnetMgr: undefined,
    });
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw new ExplainUsageError(e.message);
    throw e;
  }
  // The local store creates a missing file: explain reads the agents' store and must not make an empty one.
  if (spec.kind === 'local' && !existsSync(spec.path)) {
    throw new ExplainUsageError(`--store local:${spec.path}: no such file (give the path the agents run with: their --store local:PATH)`);
  }
  const { openStore } = await import('../agent/stores.js');
  return openStore(spec);
}

/** The exit status for an explanation: EXIT_ERRORS when any finding is an error, unless exitZero. */
export function exitStatus(e: Explanation, exitZero = false): number {
  return !exitZero && e.findings.some((f) => f.severity === 'error') ? EXIT_ERRORS : EXIT_OK;
}

/** Explains and writes; returns the exit status. */
export async function explainCommand(opts: ExplainCliOptions): Promise<number> {
  if (!EXPLAIN_FORMATS.includes(opts.format as ExplainFormat)) {
    throw new ExplainUsageError(`--format must be one of ${EXPLAIN_FORMATS.join(', ')}, got "${opts.format}"`);
  }
  const store = await openExplainStore(opts);
  let e: Explanation;
  try {
    e = await explain({ netns: opts.netns, subnetFile: opts.subnetFile, cniDataDir: opts.cniDataDir, store });
  } finally {
    await store?.close();
  }
  const text = render(e, opts.format as ExplainFormat);
  if (opts.out) writeFileSync(opts.out, text);
  else process.stdout.write(text);
  return exitStatus(e, opts.exitZero);
}
