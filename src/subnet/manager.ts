// The lease manager: this node's subnet lease in a store (any SubnetStore),
// kept alive, and the other nodes' leases as events for a backend.
//
// acquire: list, choose in flannel's order (this node's own lease again, by
// public IP, renewed with the new attrs; else the subnet of the old
// subnet.env; else a random free one), write with the store's compare-and-swap,
// and on a lost race list again and retry (10 times). One lease holds both
// subnets in dual stack (flannel's "A&B" key).
//
// renewal: TTL 24 h, renewed at expiry minus a margin (60 min), retried every
// minute on error; a reservation (no TTL) is never renewed nor expires.
// Renewal is a compare-and-swap on the revision the manager last wrote, so
// it never overwrites a lease another node took after ours was lost.
//
// watch: a snapshot of the other nodes' leases, then added/updated/removed
// (updated: same key, new attrs, e.g. a peer back with a new VtepMAC);
// re-lists and diffs after the store's history was compacted (or an error).
// This node's own lease being deleted, expiring or taken is reported as
// "own-lease-lost": the agent stops using the subnet.
import { formatCidr, type Cidr } from '../ipam/addr.js';
import { chooseSubnet, fits } from './allocate.js';
import type { FamilyConfig, NetworkConfig } from './config.js';
import { encodeAttrs, type Lease, type LeaseAttrs } from './lease.js';
import { CompactedError, LeaseGoneError, type StoredLease, type SubnetStore, type WatchEvent, type Watcher } from './store.js';

export const LEASE_TTL_MS = 24 * 3600_000;
export const DEFAULT_RENEW_MARGIN_MS = 60 * 60_000;
export const RENEW_RETRY_MS = 60_000;
export const RACE_RETRIES = 10;

/** Time and timers, injectable so that tests need not wait a day. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface AcquirePreferences {
  /** This node's public IPv4 (flannel's PublicIP): how its own lease is found again. */
  publicIp: string | null;
  publicIpv6: string | null;
  /** The subnets of the old subnet.env, reused when free. */
  previousSubnet: Cidr | null;
  previousIpv6Subnet: Cidr | null;
  backendType: string;
  /** The backend's data (vxlan: {VNI, VtepMAC}), as flannel's BackendData JSON. */
  backendData: unknown;
  backendV6Data?: unknown;
}

export interface Acquired {
  key: string;
  lease: Lease;
  /** assigned: the store gave this node its subnet (Kubernetes: the node's podCIDR). */
  how: 'own-lease' | 'previous' | 'random' | 'assigned';
  /** How many tries it took (1 unless it lost races). */
  attempts: number;
}

export interface ManagerOptions {
  ttlMs?: number;
  /** Renew this long before expiry (flannel's --subnet-lease-renew-margin). */
  renewMarginMs?: number;
  /** Wait before retrying a failed renewal or a failed watch. */
  retryMs?: number;
  /** Wait before listing again after the watch failed (default: retryMs); an agent wants to catch up soon after an outage. */
  watchRetryMs?: number;
  clock?: Clock;
  random?: () => number;
  log?: (message: string) => void;
  /** Called once when this node's lease is lost (also sent to every watch). */
  onOwnLeaseLost?: (e: OwnLeaseLost) => void;
}

export interface OwnLeaseLost {
  type: 'own-lease-lost';
  key: string;
  /** deleted: removed or swept from the store; taken: another node's lease is under the key; expired: renewal failed until it ran out. */
  reason: 'deleted' | 'taken' | 'expired';
  lease: Lease;
}

export type PeerEvent =
  | { type: 'snapshot'; leases: Lease[] }
  | { type: 'added'; lease: Lease }
  | { type: 'updated'; lease: Lease; previous: Lease }
  | { type: 'removed'; lease: Lease }
  | { type: 'malformed'; key: string; error: string }
  | OwnLeaseLost;

export interface PeerWatch {
  close(): void;
}

export class AcquireError extends Error {}

const overlaps = (a: Cidr, b: Cidr) => {
  if (a.ip.family !== b.ip.family) return false;
  const bits = BigInt(a.ip.family === 4 ? 32 : 128);
  const p = BigInt(Math.min(a.prefix, b.prefix));
  return a.ip.value >> (bits - p) === b.ip.value >> (bits - p);
};

const sameAttrs = (a: LeaseAttrs, b: LeaseAttrs) => encodeAttrs(a) === encodeAttrs(b);

/** Whether a lease fits the config: a subnet of the right length in range for each enabled family, none for the others. */
function compatible(config: NetworkConfig, l: Lease): boolean {
  const ok = (f: FamilyConfig | null, c: Cidr | null) => (f ? c !== null && fits(f, c) : c === null);
  return ok(config.ipv4, l.subnet) && ok(config.ipv6, l.ipv6Subnet);
}

export class LeaseManager {
  private readonly ttlMs: number;
  private readonly marginMs: number;
  private readonly retryMs: number;
  private readonly watchRetryMs: number;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: (m: string) => void;
  private config: NetworkConfig | null = null;
  private own: StoredLease | null = null;
  private lost = false;
  /** Bumped by acquire and release: a renewal started before is stale. */
  private epoch = 0;
  private renewTimer: unknown = null;
  private renewing: Promise<void> | null = null;
  private readonly lostListeners = new Set<(e: OwnLeaseLost) => void>();
  private closed = false;

  constructor(
    readonly store: SubnetStore,
    opts: ManagerOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? LEASE_TTL_MS;
    this.marginMs = opts.renewMarginMs ?? DEFAULT_RENEW_MARGIN_MS;
    this.retryMs = opts.retryMs ?? RENEW_RETRY_MS;
    this.watchRetryMs = opts.watchRetryMs ?? this.retryMs;
    if (!(this.ttlMs > 0) || !(this.marginMs >= 0) || !(this.retryMs > 0) || !(this.watchRetryMs > 0)) throw new RangeError('ttlMs and retryMs must be positive, renewMarginMs not negative');
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.log = opts.log ?? (() => undefined);
    if (opts.onOwnLeaseLost) this.lostListeners.add(opts.onOwnLeaseLost);
  }

  /** This node's lease as last written (null before acquire). */
  get lease(): StoredLease | null {
    return this.own;
  }

  /** The public IP that identifies this node's lease: IPv4 unless the cluster is IPv6-only. */
  private primaryIp(config: NetworkConfig, a: Pick<LeaseAttrs, 'publicIp' | 'publicIpv6'>): string | null {
    return config.ipv4 ? a.publicIp : a.publicIpv6;
  }

  async acquire(config: NetworkConfig, prefs: AcquirePreferences): Promise<Acquired> {
    if (this.closed) throw new AcquireError('the lease manager is closed');
    const id = this.primaryIp(config, prefs);
    if (!id) throw new AcquireError(`acquiring a lease needs this node's public ${config.ipv4 ? 'IPv4' : 'IPv6'} address (flannel's PublicIP${config.ipv4 ? '' : 'v6'})`);
    this.stopRenewal();
    this.epoch++;
    this.config = config;
    this.own = null;
    this.lost = false;
    const attrs: LeaseAttrs = {
      publicIp: prefs.publicIp,
      publicIpv6: prefs.publicIpv6,
      backendType: prefs.backendType,
      backendData: prefs.backendData ?? null,
      backendV6Data: prefs.backendV6Data ?? null,
    };
    if (this.store.assignedSubnets) return this.acquireAssigned(config, attrs);
    for (let attempt = 1; attempt <= RACE_RETRIES; attempt++) {
      const got = await this.tryAcquire(config, prefs, attrs, id);
      if (got) {
        this.own = got.stored;
        this.log(`lease ${got.stored.key}: ${got.how === 'own-lease' ? 'this node\'s own lease, renewed' : got.how === 'previous' ? 'the subnet of the previous subnet.env' : 'a free subnet'}` +
          `${got.stored.lease.expiresAt === null ? ' (a reservation: no TTL)' : ''}${attempt > 1 ? ` after ${attempt - 1} lost race(s)` : ''}`);
        this.scheduleRenewal();
        return { key: got.stored.key, lease: got.stored.lease, how: got.how, attempts: attempt };
      }
      this.log(`lost a race for a subnet in ${this.store.description} (try ${attempt} of ${RACE_RETRIES}), listing again`);
    }
    throw new AcquireError(`no subnet lease after ${RACE_RETRIES} tries in ${this.store.description}: other nodes took every subnet this node chose; try again`);
  }

  /** The store assigns the subnet (Kubernetes): write that lease, without a TTL (it lives as long as the node). */
  private async acquireAssigned(config: NetworkConfig, attrs: LeaseAttrs): Promise<Acquired> {
    const assigned = await this.store.assignedSubnets!({ ipv4: config.ipv4 !== null, ipv6: config.ipv6 !== null });
    for (const [f, c] of [[config.ipv4, assigned.subnet], [config.ipv6, assigned.ipv6Subnet]] as const) {
      if (f && c && !(c.prefix >= f.network.prefix && overlaps(f.network, c))) {
        throw new AcquireError(`the subnet ${formatCidr(c)} assigned to this node by ${this.store.description} is outside the cluster network ${formatCidr(f.network)} of the network config: they must agree (kube-controller-manager --cluster-cidr and net-conf.json's Network)`);
      }
    }
    const stored = await this.store.create({ ...assigned, attrs, expiresAt: null }, null);
    if (!stored) throw new AcquireError(`${this.store.description} refused to write this node's lease for its assigned subnet`);
    this.own = stored;
    this.log(`lease ${stored.key}: the subnet assigned to this node by ${this.store.description}`);
    return { key: stored.key, lease: stored.lease, how: 'assigned', attempts: 1 };
  }

  /** One round: list, choose, compare-and-swap. null when a race was lost. */
  private async tryAcquire(config: NetworkConfig, prefs: AcquirePreferences, attrs: LeaseAttrs, id: string): Promise<{ stored: StoredLease; how: Acquired['how'] } | null> {
    const { leases, malformed } = await this.store.list();
    for (const m of malformed) this.log(`ignoring a malformed lease in ${this.store.description}: ${m.key}: ${m.error}`);
    const mine = leases.filter((s) => this.primaryIp(config, s.lease.attrs) === id);
    const own = mine.find((s) => compatible(config, s.lease));
    if (own) {
      try {
        const stored = await this.store.renew({ ...own.lease, attrs }, own.lease.expiresAt === null ? null : this.ttlMs, own.modRevision);
        return { stored, how: 'own-lease' };
      } catch (e) {
        if (e instanceof LeaseGoneError) return null;
        throw e;
      }
    }
    // flannel deletes a lease of this node's that no longer fits the config (a
    // changed Network or SubnetLen): peers would otherwise route to both. A
    // reservation is the administrator's, and stays.
    const stale = new Set<string>();
    for (const s of mine) {
      if (s.lease.expiresAt === null) continue;
      this.log(`deleting lease ${s.key} of this node (public IP ${id}): it does not fit the network config any more`);
      if (await this.store.remove(s.key, s.modRevision)) stale.add(s.key);
    }
    const others = leases.filter((s) => !stale.has(s.key)).map((s) => s.lease);
    const free = (c: Cidr) => !others.some((l) => [l.subnet, l.ipv6Subnet].some((t) => t !== null && overlaps(t, c)));

    let subnet: Cidr | null = null;
    let ipv6Subnet: Cidr | null = null;
    let how: Acquired['how'] = 'random';
    // The previous subnets, only when every enabled family has one that fits and is free (as flannel).
    const prev4 = prefs.previousSubnet;
    const prev6 = prefs.previousIpv6Subnet;
    const prevOk = (f: FamilyConfig | null, c: Cidr | null) => (f ? c !== null && fits(f, c) && free(c) : true);
    if ((prev4 || prev6) && prevOk(config.ipv4, prev4) && prevOk(config.ipv6, prev6)) {
      subnet = config.ipv4 ? prev4 : null;
      ipv6Subnet = config.ipv6 ? prev6 : null;
      how = 'previous';
    } else {
      if (prev4 || prev6) this.log(`the previous subnet ${[prev4, prev6].filter((c) => c !== null).map((c) => formatCidr(c!)).join(' + ')} is taken or does not fit the config: choosing another`);
      const pick = (f: FamilyConfig) => {
        const c = chooseSubnet(f, others, { publicIp: null, previous: null }, this.random);
        return c.kind === 'own-lease' ? null : c.subnet;
      };
      subnet = config.ipv4 ? pick(config.ipv4) : null;
      ipv6Subnet = config.ipv6 ? pick(config.ipv6) : null;
    }
    const stored = await this.store.create({ subnet, ipv6Subnet, attrs, expiresAt: null }, this.ttlMs);
    return stored ? { stored, how } : null;
  }

  private effectiveMargin(): number {
    // A margin as long as the TTL would renew in a loop: renew at half-life then.
    return Math.min(this.marginMs, this.ttlMs / 2);
  }

  private scheduleRenewal(delay?: number): void {
    this.stopRenewal();
    const own = this.own;
    if (!own || this.lost || this.closed || own.lease.expiresAt === null) return;
    const ms = delay ?? Math.max(0, own.lease.expiresAt - this.effectiveMargin() - this.clock.now());
    this.renewTimer = this.clock.setTimeout(() => {
      this.renewTimer = null;
      this.renewing = this.renew().finally(() => {
        this.renewing = null;
      });
    }, ms);
  }

  private stopRenewal(): void {
    if (this.renewTimer !== null) this.clock.clearTimeout(this.renewTimer);
    this.renewTimer = null;
  }

  /** Renews now (the timer does this by itself); reports a lost lease. */
  async renew(): Promise<void> {
    const own = this.own;
    const epoch = this.epoch;
    if (!own || this.lost || this.closed) return;
    const stale = () => epoch !== this.epoch || this.lost;
    try {
      const stored = await this.store.renew(own.lease, own.lease.expiresAt === null ? null : this.ttlMs, own.modRevision);
      if (stale()) return;
      // The watch may have seen this very write first (and adopted it).
      if (!this.own || stored.modRevision >= this.own.modRevision) this.own = stored;
      this.log(`lease ${stored.key} renewed until ${new Date(stored.lease.expiresAt ?? 0).toISOString()}`);
      this.scheduleRenewal();
    } catch (renewError) {
      if (stale()) return;
      let e = renewError;
      if (e instanceof LeaseGoneError && e.reason === 'absent') {
        this.ownLeaseLost('deleted');
        return;
      }
      if (e instanceof LeaseGoneError) {
        // Written since we last did: still ours (same public IP), or another node's?
        try {
          const { leases } = await this.store.list();
          if (stale()) return;
          this.ownKeyChanged(leases.find((s) => s.key === own.key) ?? null);
          if (!this.lost) this.scheduleRenewal(0);
          return;
        } catch (listError) {
          e = listError;
        }
      }
      if (own.lease.expiresAt !== null && this.clock.now() >= own.lease.expiresAt) {
        this.log(`renewing lease ${own.key} failed until it expired: ${(e as Error).message}`);
        this.ownLeaseLost('expired');
        return;
      }
      this.log(`renewing lease ${own.key} failed (trying again in ${Math.round(this.retryMs / 1000)} s): ${(e as Error).message}`);
      this.scheduleRenewal(this.retryMs);
    }
  }

  /** Waits for a renewal in progress (tests, shutdown). */
  async settled(): Promise<void> {
    await this.renewing;
  }

  private ownLeaseLost(reason: OwnLeaseLost['reason']): void {
    if (this.lost || !this.own) return;
    this.lost = true;
    this.stopRenewal();
    const e: OwnLeaseLost = { type: 'own-lease-lost', key: this.own.key, reason, lease: this.own.lease };
    this.log(`this node's lease ${e.key} is lost (${reason}): its subnet may be handed to another node`);
    for (const l of [...this.lostListeners]) l(e);
  }

  /** A put or delete under this node's own key, or its state in a fresh list. */
  private ownKeyChanged(current: StoredLease | null): void {
    const own = this.own;
    if (!own || this.lost || !this.config) return;
    if (current === null) {
      this.ownLeaseLost('deleted');
      return;
    }
    if (this.primaryIp(this.config, current.lease.attrs) !== this.primaryIp(this.config, own.lease.attrs)) {
      this.ownLeaseLost('taken');
      return;
    }
    // Our own write (a renewal), seen through the watch, or one by our public IP elsewhere: adopt the newer.
    if (current.modRevision > own.modRevision) {
      this.own = current;
      if (this.renewing === null) this.scheduleRenewal();
    }
  }

  /**
   * The other nodes' leases: a snapshot first, then changes. Needs acquire()
   * first (this node's lease is skipped, and watched for loss). Store errors
   * go to onError, and the watch recovers by itself (list again, diff).
   */
  watch(onEvent: (e: PeerEvent) => void, onError: (e: Error) => void = () => undefined): PeerWatch {
    if (!this.own) throw new AcquireError('watch needs this node\'s lease first: call acquire()');
    const ownKey = this.own.key;
    const known = new Map<string, Lease>();
    let first = true;
    let stopped = false;
    let storeWatch: Watcher | null = null;
    let retry: unknown = null;
    const onLost = (e: OwnLeaseLost) => {
      if (!stopped) onEvent(e);
    };
    this.lostListeners.add(onLost);

    const changed = (key: string, lease: Lease) => {
      const prev = known.get(key);
      known.set(key, lease);
      if (!prev) onEvent({ type: 'added', lease });
      else if (!sameAttrs(prev.attrs, lease.attrs)) onEvent({ type: 'updated', lease, previous: prev });
    };
    const gone = (key: string) => {
      const prev = known.get(key);
      if (!prev) return;
      known.delete(key);
      onEvent({ type: 'removed', lease: prev });
    };
    const onStoreEvent = (e: WatchEvent) => {
      if (stopped) return;
      if (e.key === ownKey) {
        this.ownKeyChanged(e.type === 'put' && e.lease ? { key: e.key, lease: e.lease, modRevision: e.revision } : e.type === 'delete' ? null : this.own);
        return;
      }
      if (e.type === 'delete') gone(e.key);
      else if (e.lease) changed(e.key, e.lease);
      else onEvent({ type: 'malformed', key: e.key, error: e.error ?? 'malformed lease' });
    };
    // Consecutive failures back off (up to 4× watchRetryMs): a long outage is not a hot loop of errors.
    let failures = 0;
    const later = () => {
      if (stopped) return;
      const delay = this.watchRetryMs * 2 ** Math.min(failures++, 2);
      retry = this.clock.setTimeout(() => {
        retry = null;
        void sync();
      }, delay);
    };
    const sync = async () => {
      if (stopped) return;
      let listed;
      try {
        listed = await this.store.list();
      } catch (e) {
        onError(e as Error);
        later();
        return;
      }
      if (stopped) return;
      failures = 0;
      for (const m of listed.malformed) onEvent({ type: 'malformed', key: m.key, error: m.error });
      const ownNow = listed.leases.find((s) => s.key === ownKey) ?? null;
      this.ownKeyChanged(ownNow);
      const peers = listed.leases.filter((s) => s.key !== ownKey);
      if (first) {
        first = false;
        for (const s of peers) known.set(s.key, s.lease);
        onEvent({ type: 'snapshot', leases: peers.map((s) => s.lease) });
      } else {
        const live = new Set(peers.map((s) => s.key));
        for (const key of [...known.keys()]) if (!live.has(key)) gone(key);
        for (const s of peers) changed(s.key, s.lease);
      }
      if (stopped) return;
      try {
        storeWatch = this.store.watch(listed.revision + 1, onStoreEvent, (err) => {
          storeWatch = null;
          if (stopped) return;
          if (err instanceof CompactedError) {
            this.log(`the watch of ${this.store.description} fell behind its history: listing again`);
            void sync();
          } else {
            onError(err);
            later();
          }
        });
      } catch (e) {
        onError(e as Error);
        later();
      }
    };
    void sync();
    return {
      close: () => {
        if (stopped) return;
        stopped = true;
        this.lostListeners.delete(onLost);
        storeWatch?.close();
        if (retry !== null) this.clock.clearTimeout(retry);
      },
    };
  }

  /** Deletes this node's lease (leaving the cluster for good); a restart should not: it reuses the lease. */
  async release(): Promise<boolean> {
    const own = this.own;
    this.stopRenewal();
    this.epoch++;
    if (!own || this.lost) return false;
    this.lost = true;
    return this.store.remove(own.key, own.modRevision);
  }

  /** Stops renewal; the lease stays in the store until its TTL runs out. Watches are closed by their owners. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopRenewal();
    await this.renewing;
  }
}

