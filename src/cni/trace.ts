// Where a plugin's time goes, for the benchmark: TWILL_CNI_TRACE=1 prints one
// JSON line on stderr at the end of the call (stderr is the runtime's log, never
// parsed). Times are ms since the process started (performance.timeOrigin).

// Read at each call, not at import: a startup snapshot (the SEA binary) would
// otherwise freeze the value the build saw.
const enabled = (): boolean => process.env.TWILL_CNI_TRACE === '1';
const marks: [string, number][] = [];

export function mark(name: string): void {
  if (enabled()) marks.push([name, performance.now()]);
  if (name === 'entry') startProfile();
}

// TWILL_CNI_PROFILE=DIR: a CPU profile of the call (from main to the answer) in
// DIR, for Chrome's DevTools; the SEA refuses --cpu-prof in NODE_OPTIONS.
let session: import('node:inspector').Session | null = null;
function startProfile(): void {
  const dir = process.env.TWILL_CNI_PROFILE;
  if (!dir) return;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Session } = require('node:inspector') as typeof import('node:inspector');
  session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 50 });
  session.post('Profiler.start');
}
function stopProfile(): void {
  const dir = process.env.TWILL_CNI_PROFILE;
  if (!session || !dir) return;
  session.post('Profiler.stop', (err, res) => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { writeFileSync } = require('node:fs') as typeof import('node:fs');
    if (!err) writeFileSync(`${dir}/${process.pid}.cpuprofile`, JSON.stringify(res.profile));
  });
}

/** A duration measured elsewhere (the server's share of a forwarded call), added to the named phase. */
export function markDuration(name: `${string}:ms`, ms: number): void {
  if (enabled()) marks.push([name, ms]);
}

/** Time spent inside fn, added to the named phase. */
export async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!enabled()) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    marks.push([`${name}:ms`, performance.now() - start]);
  }
}

/** Drops what was marked (a server, which never prints a trace). */
export function clearTrace(): void {
  marks.length = 0;
}

export function flushTrace(): void {
  stopProfile();
  if (!enabled() || marks.length === 0) return;
  const out: Record<string, number> = {};
  // Points in time are kept as they are; durations (":ms") add up.
  for (const [k, v] of marks) out[k] = k.endsWith(':ms') ? (out[k] ?? 0) + v : v;
  for (const k of Object.keys(out)) out[k] = Math.round(out[k]! * 100) / 100;
  process.stderr.write(`twill-trace ${JSON.stringify(out)}\n`);
  marks.length = 0;
}
