// The suite's runner (`npm test`): every test file under dist/test, then the
// leak check. The run fails if a namespace with this run's prefix survives, or
// if the root network namespace differs in any way from before the run.
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { captureRootState, diffRootState } from './support/rootstate.js';
import { deleteNetns, listNetns } from '../src/kernel/index.js';

/** Test files under `dir` whose path below the test root contains one of `filter` (not the checkout's path: a checkout in /work/wt/etcd would match "etcd" everywhere). */
function testFiles(dir: string, filter: string[], root = dir): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...testFiles(path, filter, root));
    else if (entry.endsWith('.test.js') && (filter.length === 0 || filter.some((f) => relative(root, path).includes(f)))) out.push(path);
  }
  return out;
}

/**
 * Namespaces left by an earlier run that was killed before it could clean up:
 * `twt<run>-<pid>-...` whose process is gone. A live pid means a run in progress.
 */
function removeStaleNamespaces(): void {
  for (const name of listNetns()) {
    const m = /^twt[0-9a-f]{6}-(\d+)-/.exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue;
    } catch {
      // No such process: stale.
    }
    console.log(`# removing network namespace ${name}, left by an earlier run that was killed`);
    deleteNetns(name);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('twill tests need root: they create network namespaces, links and rules (never in the root namespace).');
    return 1;
  }
  removeStaleNamespaces();
  const prefix = `twt${randomBytes(3).toString('hex')}`;
  process.env.TWILL_TEST_PREFIX = prefix;
  const dir = fileURLToPath(new URL('.', import.meta.url));
  const filter = process.argv.slice(2);
  const files = testFiles(dir, filter);
  if (files.length === 0) {
    console.error(`no test file matches ${filter.map((f) => JSON.stringify(f)).join(' or ')} (filters match the path below dist/test/, e.g. "lab/" or "agent/etcd")`);
    return 1;
  }
  const before = await captureRootState();

  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const stream = run({ files, concurrency: 1 });
  stream.on('test:pass', (t) => {
    if (t.details.type === 'suite') return;
    if (t.skip || t.todo) skipped++;
    else passed++;
  });
  stream.on('test:fail', (t) => {
    if (t.details.type !== 'suite') failed++;
  });
  const done = new Promise<void>((resolve) => stream.on('end', () => resolve()));
  stream.pipe(new spec()).pipe(process.stdout);
  await done;

  const problems: string[] = [];
  const leaked = listNetns().filter((n) => n.startsWith(prefix));
  for (const name of leaked) {
    problems.push(`leaked network namespace: ${name}`);
    try {
      deleteNetns(name);
    } catch (e) {
      problems.push(`  and it could not be deleted: ${(e as Error).message}`);
    }
  }
  const after = await captureRootState();
  for (const d of diffRootState(before, after)) problems.push(`root namespace changed: ${d}`);

  console.log('\n# leak check');
  if (problems.length === 0) {
    console.log(`ok: no namespace with prefix ${prefix} left, root namespace unchanged`);
    passed++;
  } else {
    for (const p of problems) console.log(`not ok: ${p}`);
    failed++;
  }
  // Plain closing line that CI reads.
  console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
