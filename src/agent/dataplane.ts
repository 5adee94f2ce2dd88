// The agent's side of the kernel: lease events in, kernel state out, and kept
// that way. Lease events take the fast path (one addPeer / removePeer); a full
// sync (compare everything, repair the difference, remove what is twill's and
// no longer wanted) runs at start, when the kernel reports that something
// twill owns was deleted (restored within a second, driven by netlink
// notifications, not a poll), and on a slow period as a safety net.
//
// Everything runs on one queue: a sync never interleaves with an addPeer.
// Syncs are rate-limited by a token bucket: a daemon that keeps deleting
// twill's routes shows up as throttled syncs and repair counters, not as a
// hot loop.
import type { Handle, KernelEvent, Watcher } from '../kernel/index.js';
import type { Backend, Repair } from '../backend/backend.js';
import type { PeerEvent } from '../subnet/manager.js';
import { describeLease, leaseKey, type Lease } from '../subnet/lease.js';
import type { Logger } from './log.js';
import type { AgentMetrics } from './metrics.js';

export interface DataPlaneOptions {
  /** Full sync period (the safety net; kernel events do the real work). */
  resyncMs: number;
  /** Wait for more events before a sync: a deleted device takes its routes with it, one sync repairs all. */
  debounceMs: number;
  /** Token bucket: this many syncs at once, then one per refillMs. */
  burst: number;
  refillMs: number;
  /** Extra checks run with every sync (the cni0 address). */
  extraSync?: (own: Lease) => Promise<Repair[]>;
}

export const DEFAULT_DATAPLANE_OPTIONS: DataPlaneOptions = { resyncMs: 60_000, debounceMs: 10, burst: 5, refillMs: 1000 };

export class DataPlane {
  private own: Lease | null = null;
  private readonly peers = new Map<string, Lease>();
  private queue: Promise<unknown> = Promise.resolve();
  private watcher: Watcher | null = null;
  private syncTimer: NodeJS.Timeout | null = null;
  private periodic: NodeJS.Timeout | null = null;
  private tokens: number;
  private lastRefill = Date.now();
  private closed = false;
  /** Whether the first full sync is done (part of readiness). */
  synced = false;

  constructor(
    private readonly h: Handle,
    private readonly backends: Backend[],
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    private readonly opts: DataPlaneOptions = DEFAULT_DATAPLANE_OPTIONS,
  ) {
    this.tokens = opts.burst;
  }

  /** Kernel watches first, so that nothing deleted during the first sync goes unnoticed. */
  startWatching(): void {
    this.watcher = this.h.watch(['link', 'addr', 'route', 'neigh']);
    this.watcher.on('event', (ev: KernelEvent) => {
      if (this.own && this.backends.some((b) => b.concerns(ev))) this.scheduleSync('kernel');
    });
    this.watcher.on('error', (e: Error) => {
      // Lost notifications (ENOBUFS): only a full sync knows what changed.
      this.log.warn({ err: e.message }, 'kernel notifications were lost: syncing');
      this.scheduleSync('kernel');
    });
    this.periodic = setInterval(() => this.scheduleSync('periodic'), this.opts.resyncMs);
    this.periodic.unref();
  }

  get peerCount(): number {
    return this.peers.size;
  }

  /** The node's own lease: set before the snapshot (and again if it changes). */
  setOwn(own: Lease): Promise<void> {
    this.own = own;
    return this.enqueue(async () => {
      for (const b of this.backends) this.report(await b.setup(own), 'setup');
    });
  }

  onPeerEvent(e: PeerEvent): Promise<void> {
    const received = performance.now();
    switch (e.type) {
      case 'snapshot':
        this.peers.clear();
        for (const l of e.leases) {
          this.peers.set(leaseKey(l), l);
          for (const b of this.backends) {
            const problem = b.problemWith?.(l);
            if (!problem) continue;
            this.metrics.peerErrors.inc();
            this.log.warn({ lease: describeLease(l), err: problem }, 'cannot program the path to this peer');
          }
        }
        this.metrics.leasesKnown.set(this.peers.size);
        return this.enqueue(() => this.sync('snapshot')).then(() => {
          this.synced = true;
          this.log.info({ peers: this.peers.size, ms: Math.round(performance.now() - received) }, 'programmed every peer');
          this.metrics.programmingSeconds.observe({ event: 'snapshot' }, (performance.now() - received) / 1000);
        });
      case 'added':
      case 'updated': {
        const previous = e.type === 'updated' ? e.previous : null;
        this.peers.set(leaseKey(e.lease), e.lease);
        this.metrics.leasesKnown.set(this.peers.size);
        this.log.info({ lease: describeLease(e.lease), ...(previous ? { previous: describeLease(previous) } : {}) }, e.type === 'added' ? 'peer joined' : 'peer changed');
        return this.enqueue(async () => {
          for (const b of this.backends) {
            try {
              await b.addPeer(e.lease, previous);
            } catch (err) {
              this.metrics.peerErrors.inc();
              this.log.error({ lease: describeLease(e.lease), err: (err as Error).message }, 'cannot program the path to this peer');
            }
          }
          this.metrics.programmingSeconds.observe({ event: e.type }, (performance.now() - received) / 1000);
        });
      }
      case 'removed':
        this.peers.delete(leaseKey(e.lease));
        this.metrics.leasesKnown.set(this.peers.size);
        this.log.info({ lease: describeLease(e.lease) }, 'peer left');
        return this.enqueue(async () => {
          for (const b of this.backends) {
            await b.removePeer(e.lease).catch((err: unknown) => this.log.error({ lease: describeLease(e.lease), err: (err as Error).message }, 'cannot remove the path to this peer'));
          }
          this.metrics.programmingSeconds.observe({ event: 'removed' }, (performance.now() - received) / 1000);
        });
      case 'malformed':
        this.metrics.malformedLeases.inc();
        this.log.warn({ key: e.key, err: e.error }, 'skipping a malformed lease in the store');
        return Promise.resolve();
      case 'own-lease-lost':
        return Promise.resolve(); // the agent handles it
    }
  }

  /** Waits for everything queued so far (tests, shutdown). */
  idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  private enqueue(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private scheduleSync(why: string): void {
    if (this.closed || this.syncTimer !== null || !this.own) return;
    const now = Date.now();
    const refilled = Math.floor((now - this.lastRefill) / this.opts.refillMs);
    if (refilled > 0) {
      this.tokens = Math.min(this.opts.burst, this.tokens + refilled);
      this.lastRefill += refilled * this.opts.refillMs;
    }
    let delay = this.opts.debounceMs;
    if (this.tokens > 0) {
      this.tokens--;
    } else {
      this.metrics.reconcileThrottled.inc();
      delay = Math.max(delay, this.lastRefill + this.opts.refillMs - now);
      this.lastRefill += this.opts.refillMs;
    }
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.enqueue(() => this.sync(why)).catch((e: unknown) => {
        this.log.error({ err: (e as Error).message }, 'sync failed: retrying');
        this.scheduleSync('retry');
      });
    }, delay);
  }

  private async sync(why: string): Promise<void> {
    if (this.closed || !this.own) return;
    const peers = [...this.peers.values()];
    for (const b of this.backends) this.report(await b.sync(this.own, peers), why);
    if (this.opts.extraSync) this.report(await this.opts.extraSync(this.own), why);
  }

  private report(repairs: Repair[], why: string): void {
    for (const r of repairs) {
      // At start, building the state is not a repair.
      if (why === 'setup' || (why === 'snapshot' && r.kind === 'missing')) {
        this.log.debug({ ...r, why }, 'programmed');
        continue;
      }
      this.metrics.reconcileCorrections.inc({ object: r.object, kind: r.kind });
      this.log.warn({ ...r, why }, 'repaired');
    }
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    if (this.syncTimer) clearTimeout(this.syncTimer);
    if (this.periodic) clearInterval(this.periodic);
  }
}
