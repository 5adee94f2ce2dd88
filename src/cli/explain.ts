// The `twill explain` subcommand: reads this node's network (or a named
// namespace's), with the cluster's leases when --store names their store, and
// writes the explanation to stdout or --out. Its exit status tells a script
// whether anything is broken (see EXIT_* below).
import { existsSync, writeFileSync } from 'node:fs';
import { explain } from '../inspect/explain.js';
import type { Explanation } from '../inspect/model.js';
import { EXPLAIN_FORMATS, render, type ExplainFormat } from '../inspect/render.js';
import { StoreError, type SubnetStore } from '../subnet/store.js';
import type { StoreFlags } from './agent-command.js';

/** No finding is an error (warnings and info do not count), or --exit-zero. */
export const EXIT_OK = 0;
/** At least one finding is an error. */
export const EXIT_ERRORS = 1;
/** Bad arguments: nothing was read. */
export const EXIT_USAGE = 2;

/** The store flags are the agent's own (`twill agent --store`, --etcd-*, --kube-*, --node-name). */
export interface ExplainCliOptions extends Partial<StoreFlags> {
  netns?: string;
  format: string;
  out?: string;
  subnetFile?: string;
  cniDataDir?: string;
  exitZero?: boolean;
}

export class ExplainUsageError extends Error {}

/** The store explain reads, and (Kubernetes) this node's name in it. */
interface ExplainStore {
  store: SubnetStore;
  nodeName: string | null;
}

/**
 * Opens the store the agents use, resolved exactly as `twill agent` resolves
 * its flags (imported only when asked for: explain without a store loads
 * neither SQLite nor an etcd client). The Kubernetes store is opened without
 * a node name, which makes it read-only: it refuses every write before the
 * API sees it (no annotations, no node condition); the name only tells
 * explain which lease is this node's.
 */
async function openExplainStore(opts: ExplainCliOptions): Promise<ExplainStore | undefined> {
  if (opts.store === undefined && opts.etcdEndpoints === undefined && !opts.kubeSubnetMgr) return undefined;
  const [{ resolveStore }, { InvalidArgumentError }, { DEFAULTS }] = await Promise.all([import('./agent-command.js'), import('commander'), import('../agent/options.js')]);
  let spec;
  try {
    spec = resolveStore({ ...opts, etcdPrefix: opts.etcdPrefix ?? DEFAULTS.etcdPrefix });
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw new ExplainUsageError(e.message);
    throw e;
  }
  // The local store creates a missing file: explain reads the agents' store and must not make an empty one.
  if (spec.kind === 'local' && !existsSync(spec.path)) {
    throw new ExplainUsageError(`--store local:${spec.path}: no such file (give the path the agents run with: their --store local:PATH)`);
  }
  const nodeName = spec.kind === 'kube' ? spec.nodeName : null;
  if (spec.kind === 'kube') spec = { ...spec, nodeName: null };
  const { openStore } = await import('../agent/stores.js');
  try {
    return { store: await openStore(spec), nodeName };
  } catch (e) {
    // Nothing to read from (no kubeconfig, no in-cluster service account, ...): a usage error, as a missing file.
    if (e instanceof StoreError) throw new ExplainUsageError(e.message);
    throw e;
  }
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
  const opened = await openExplainStore(opts);
  let e: Explanation;
  try {
    e = await explain({ netns: opts.netns, subnetFile: opts.subnetFile, cniDataDir: opts.cniDataDir, store: opened?.store, nodeName: opened?.nodeName ?? undefined });
  } finally {
    await opened?.store.close();
  }
  const text = render(e, opts.format as ExplainFormat);
  if (opts.out) writeFileSync(opts.out, text);
  else process.stdout.write(text);
  return exitStatus(e, opts.exitZero);
}
