// Shared by the store and lease manager tests: temp store files, a clock the
// test moves by hand, other agents in worker processes.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseLeaseKey, type Lease } from '../../src/subnet/lease.js';
import type { Clock } from '../../src/subnet/manager.js';
import type { WatchEvent } from '../../src/subnet/store.js';

/** A temp directory per test file; its store files go away with it. */
export function tempDir(): { dir: string; db: (name?: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'twill-leases-'));
  let n = 0;
  return { dir, db: (name) => join(dir, name ?? `leases-${++n}.db`), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const leaseOf = (key: string, publicIp: string | null, mac = '02:00:00:00:00:01', publicIpv6: string | null = null): Lease => ({
  ...parseLeaseKey(key),
  attrs: { publicIp, publicIpv6, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, backendV6Data: null },
  expiresAt: null,
});

/** Timers that fire only when the test advances the time. */
export class FakeClock implements Clock {
  t: number;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now = (): number => this.t;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** When the next timer is due (null: none). */
  get nextAt(): number | null {
    return this.timers.length ? Math.min(...this.timers.map((t) => t.at)) : null;
  }

  /** Moves the time forward, firing due timers in order and letting their promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = Math.max(this.t, due.at);
      due.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets pending promise chains (and immediate timers) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

const WORKER = fileURLToPath(new URL('./store-worker.js', import.meta.url));

/** Runs store-worker.js in its own process; its JSON answer. */
export function worker<T>(...args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [WORKER, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`store-worker ${args[0]} failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as T);
    });
  });
}

/** Resolves once `pred` holds for the collected items, or rejects after `ms`. */
export function until<T>(items: T[], pred: (items: T[]) => boolean, ms = 10_000, what = 'events'): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (pred(items)) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(items, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

/** An event without its decoded lease, for comparisons: type, key, public IP, MAC. */
export const brief = (e: WatchEvent) => ({
  type: e.type,
  key: e.key,
  ...(e.lease ? { ip: e.lease.attrs.publicIp, mac: (e.lease.attrs.backendData as { VtepMAC?: string } | null)?.VtepMAC } : {}),
});
