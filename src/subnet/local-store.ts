// The local store (`--store local:PATH`, the lab's default): subnet leases in
// one SQLite file that several agents (processes) on one machine share.
//
// Uniqueness: every write is one `BEGIN IMMEDIATE` transaction, so writers are
// serialised by SQLite's write lock across processes; create() checks that the
// key is absent (or expired) and inserts it inside that one transaction, so two
// agents can never both get a subnet. A key is also refused when another live
// key holds one of its subnets (dual stack: "A&B" against "A&C" or "A").
// Waiting for the lock is bounded by the busy timeout (better-sqlite3 waits
// synchronously); a write holds it for well under a millisecond.
//
// Ordering: `meta.revision` is a counter bumped in the same transaction as every
// change, and each change appends one row to `events` under that revision; a
// watcher reads `events` in revision order, so it sees every change, once, in
// the order they were committed, with no gaps. `events` keeps the last
// `historyLimit` changes; `meta.compacted` says through which revision they were
// pruned, and a watcher that needs an older one gets CompactedError.
//
// Expiry: expires_at is wall-clock ms. An expired row is never returned (list
// filters it, create/renew/remove treat it as absent), and a sweep deletes
// expired rows, each deletion an event like any other: run inside every write
// transaction and by every watch poll (a cheap indexed MIN(expires_at) check
// first, the write lock only when something is due).
//
// Watch: SQLite has no cross-process notification (its update hook sees only
// its own connection), so a watcher polls `events` every `pollIntervalMs`,
// 100 ms by default. A poll that finds nothing is two indexed reads (the next
// expiry, the events after the cursor): ~55 µs measured here, so ten a second
// cost an agent ~0.05% of a core, a ten-node lab 0.5%. 100 ms is then the most a
// peer's new or changed lease goes unseen (50 ms on average). That dominates the
// ~2 ms of netlink an agent then needs to program the path (etcd would deliver
// in ~2 ms), but it is far below anything that waits on it: a node's start-up
// and a pod's take seconds. Shorter buys nothing visible for more wake-ups;
// much longer would show as a new node's pods unreachable for a noticeable
// moment. Writes made through this same store wake its watchers at once.
//
// The file is in WAL mode (readers never block the writer nor each other),
// synchronous=FULL (a committed lease survives a power cut: a lost one could be
// handed out twice). It must be on a local file system (WAL uses shared memory).
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { decodeAttrs, encodeAttrs, leaseKey, parseLeaseKey, type Lease } from './lease.js';
import { CompactedError, LeaseGoneError, StoreError, type ListResult, type MalformedLease, type StoredLease, type SubnetStore, type WatchEvent, type Watcher } from './store.js';

export const SCHEMA_VERSION = 1;
export const DEFAULT_POLL_INTERVAL_MS = 100;
export const DEFAULT_HISTORY_LIMIT = 1000;
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

export interface LocalStoreOptions {
  /** How often a watch looks for changes made by other processes (ms). */
  pollIntervalMs?: number;
  /** How many past changes are kept for watchers that fall behind. */
  historyLimit?: number;
  /** How long a write waits for another process's write lock (ms). */
  busyTimeoutMs?: number;
  /** Wall clock in ms (expiry); injectable for tests. */
  now?: () => number;
  /** better-sqlite3's addon path, for builds that place it themselves (the single executable). */
  nativeBinding?: string;
}

interface LeaseRow {
  key: string;
  value: string;
  expires_at: number | null;
  mod_revision: number;
}

interface EventRow {
  revision: number;
  key: string;
  type: string;
  value: string | null;
  expires_at: number | null;
}

/** A lease from its key and flannel JSON value; throws on a malformed one. */
function decodeRow(key: string, value: string, expiresAt: number | null): Lease {
  const { subnet, ipv6Subnet } = parseLeaseKey(key);
  return { subnet, ipv6Subnet, attrs: decodeAttrs(value, key), expiresAt };
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

function checkTtl(ttlMs: number | null, op: string, where: string, key: string): void {
  if (ttlMs !== null && !(Number.isSafeInteger(ttlMs) && ttlMs > 0)) {
    throw new StoreError(op, where, `the TTL must be a positive number of milliseconds or null (a reservation), got ${ttlMs}`, key);
  }
}

class PollWatch implements Watcher {
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly store: LocalStore,
    private next: number,
    private readonly onEvent: (e: WatchEvent) => void,
    private readonly onError: (e: Error) => void,
    private readonly intervalMs: number,
  ) {
    this.schedule(0);
  }

  schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), ms);
  }

  private poll(): void {
    this.timer = null;
    if (this.closed) return;
    try {
      this.store.sweepIfDue('watch');
      for (;;) {
        const batch = this.store.readEvents(this.next);
        for (const e of batch.events) {
          if (this.closed) return;
          this.next = e.revision + 1;
          this.onEvent(e);
        }
        if (!batch.more) break;
      }
    } catch (e) {
      this.close();
      this.onError(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.schedule(this.intervalMs);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.store.forget(this);
  }
}

export class LocalStore implements SubnetStore {
  readonly description: string;
  readonly path: string;
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly pollIntervalMs: number;
  private readonly historyLimit: number;
  private readonly watches = new Set<PollWatch>();
  private closed = false;

  private readonly q: {
    revision: Database.Statement<[], number>;
    compacted: Database.Statement<[], number>;
    bump: Database.Statement<[], number>;
    setCompacted: Database.Statement<[number]>;
    prune: Database.Statement<[number]>;
    addEvent: Database.Statement<[number, string, string, string | null, number | null]>;
    get: Database.Statement<[string], LeaseRow>;
    live: Database.Statement<[number], LeaseRow>;
    insert: Database.Statement<[string, string, number | null, number]>;
    update: Database.Statement<[string, number | null, number, string]>;
    delete: Database.Statement<[string]>;
    sharing: Database.Statement<[string, string, string], string>;
    nextExpiry: Database.Statement<[], number | null>;
    expired: Database.Statement<[number], LeaseRow>;
    events: Database.Statement<[number, number], EventRow>;
  };

  /** Opens (and creates, with its directory, if missing) the store file. */
  constructor(path: string, opts: LocalStoreOptions = {}) {
    this.path = resolve(path);
    this.description = `local:${this.path}`;
    this.now = opts.now ?? Date.now;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.historyLimit = opts.historyLimit ?? DEFAULT_HISTORY_LIMIT;
    if (!(this.historyLimit >= 1)) throw new StoreError('open', this.description, `historyLimit must be at least 1, got ${this.historyLimit}`);
    const busyTimeoutMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      this.db = new Database(this.path, { timeout: busyTimeoutMs, ...(opts.nativeBinding ? { nativeBinding: opts.nativeBinding } : {}) });
    } catch (e) {
      throw new StoreError('open', this.description, errorText(e), undefined, { cause: e });
    }
    try {
      this.init(busyTimeoutMs);
      const p = <A extends unknown[], R = unknown>(sql: string) => this.db.prepare<A, R>(sql);
      this.q = {
        revision: p<[], number>("SELECT value FROM meta WHERE name = 'revision'").pluck(),
        compacted: p<[], number>("SELECT value FROM meta WHERE name = 'compacted'").pluck(),
        bump: p<[], number>("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value").pluck(),
        setCompacted: p<[number]>("UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'"),
        prune: p<[number]>('DELETE FROM events WHERE revision <= ?'),
        addEvent: p<[number, string, string, string | null, number | null]>('INSERT INTO events (revision, key, type, value, expires_at) VALUES (?, ?, ?, ?, ?)'),
        get: p<[string], LeaseRow>('SELECT key, value, expires_at, mod_revision FROM leases WHERE key = ?'),
        live: p<[number], LeaseRow>('SELECT key, value, expires_at, mod_revision FROM leases WHERE expires_at IS NULL OR expires_at > ? ORDER BY key'),
        insert: p<[string, string, number | null, number]>('INSERT INTO leases (key, value, expires_at, mod_revision) VALUES (?, ?, ?, ?)'),
        update: p<[string, number | null, number, string]>('UPDATE leases SET value = ?, expires_at = ?, mod_revision = ? WHERE key = ?'),
        delete: p<[string]>('DELETE FROM leases WHERE key = ?'),
        sharing: p<[string, string, string], string>('SELECT key FROM leases WHERE key = ? OR key LIKE ? OR key LIKE ? LIMIT 1').pluck(),
        nextExpiry: p<[], number | null>('SELECT min(expires_at) FROM leases WHERE expires_at IS NOT NULL').pluck(),
        expired: p<[number], LeaseRow>('SELECT key, value, expires_at, mod_revision FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, key'),
        events: p<[number, number], EventRow>('SELECT revision, key, type, value, expires_at FROM events WHERE revision >= ? ORDER BY revision LIMIT ?'),
      };
    } catch (e) {
      this.db.close();
      throw e instanceof StoreError ? e : new StoreError('open', this.description, errorText(e), undefined, { cause: e });
    }
  }

  /** WAL and the schema; several agents may open a new file at the same moment. */
  private init(busyTimeoutMs: number): void {
    const deadline = Date.now() + busyTimeoutMs;
    for (;;) {
      try {
        const mode = this.db.pragma('journal_mode = WAL', { simple: true });
        if (mode !== 'wal') throw new Error(`cannot switch the file to WAL mode (it stays in ${String(mode)} mode)`);
        this.db.pragma('synchronous = FULL');
        // An existing store needs no write lock to open (another agent may hold it).
        if (this.schemaVersion() === SCHEMA_VERSION) return;
        this.db.transaction(() => {
          if (this.schemaVersion() === SCHEMA_VERSION) return;
          this.db.exec(`
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
            INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
            -- key: flannel's ("10.244.1.0-24", "10.244.1.0-24&fd00::-64"); value: flannel's LeaseAttrs JSON;
            -- expires_at: ms since the epoch, NULL for a reservation; mod_revision: the change that wrote it.
            CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER, mod_revision INTEGER NOT NULL) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS leases_expires_at ON leases (expires_at) WHERE expires_at IS NOT NULL;
            -- One row per change, in revision order; value: the new value (put) or the last one (delete).
            CREATE TABLE IF NOT EXISTS events (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL CHECK (type IN ('put', 'delete')), value TEXT, expires_at INTEGER);
          `);
          this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
        }).immediate();
        return;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if ((code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') && Date.now() < deadline) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 40);
          continue;
        }
        throw new StoreError('open', this.description, errorText(e), undefined, { cause: e });
      }
    }
  }

  private schemaVersion(): number {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new Error(`the file has schema version ${version}, written by a newer twill (this one knows ${SCHEMA_VERSION})`);
    return version;
  }

  private check(op: string, key?: string): void {
    if (this.closed) throw new StoreError(op, this.description, 'the store is closed', key);
  }

  /** Runs `fn` under the write lock, as one transaction; SQLite errors become StoreErrors naming the operation. */
  private write<T>(op: string, key: string | undefined, fn: () => T): T {
    this.check(op, key);
    let out: T;
    try {
      out = this.db.transaction(fn).immediate();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError(op, this.description, errorText(e), key, { cause: e });
    }
    this.wake();
    return out;
  }

  private read<T>(op: string, fn: () => T): T {
    this.check(op);
    try {
      return this.db.transaction(fn).deferred();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError(op, this.description, errorText(e), undefined, { cause: e });
    }
  }

  /** Appends a change (inside a write transaction); returns its revision. */
  private record(type: 'put' | 'delete', key: string, value: string | null, expiresAt: number | null): number {
    const revision = this.q.bump.get()!;
    this.q.addEvent.run(revision, key, type, value, expiresAt);
    const keepFrom = revision - this.historyLimit;
    if (keepFrom > 0) {
      this.q.prune.run(keepFrom);
      this.q.setCompacted.run(keepFrom);
    }
    return revision;
  }

  /** Deletes expired leases, each an event (inside a write transaction). */
  private sweepLocked(): number {
    const rows = this.q.expired.all(this.now());
    for (const r of rows) {
      this.q.delete.run(r.key);
      this.record('delete', r.key, r.value, r.expires_at);
    }
    return rows.length;
  }

  /** Removes the leases whose TTL has run out; how many. */
  sweep(op = 'sweep'): number {
    return this.write(op, undefined, () => this.sweepLocked());
  }

  /** Sweeps only when a lease is due: a read, not the write lock, in the common case. */
  sweepIfDue(op = 'sweep'): void {
    const next = this.read(op, () => this.q.nextExpiry.get() ?? null);
    if (next !== null && next <= this.now()) this.sweep(op);
  }

  private live(key: string): LeaseRow | null {
    const row = this.q.get.get(key);
    return row && (row.expires_at === null || row.expires_at > this.now()) ? row : null;
  }

  /** The local store keeps only leases: its config comes from --net-conf FILE. */
  async readNetworkConfig(): Promise<string | null> {
    return null;
  }

  async list(): Promise<ListResult> {
    this.sweepIfDue('list');
    return this.read('list', () => {
      const revision = this.q.revision.get()!;
      const leases: StoredLease[] = [];
      const malformed: MalformedLease[] = [];
      for (const r of this.q.live.all(this.now())) {
        try {
          leases.push({ key: r.key, lease: decodeRow(r.key, r.value, r.expires_at), modRevision: r.mod_revision });
        } catch (e) {
          malformed.push({ key: r.key, error: errorText(e) });
        }
      }
      return { leases, revision, malformed };
    });
  }

  async create(lease: Lease, ttlMs: number | null): Promise<StoredLease | null> {
    const key = leaseKey(lease);
    checkTtl(ttlMs, 'create', this.description, key);
    const value = encodeAttrs(lease.attrs);
    return this.write('create', key, () => {
      this.sweepLocked();
      if (this.q.get.get(key)) return null;
      // Dual stack: "A&B" must not share A or B with another key either
      // ("A&C", or a single-stack "A"; nor "A" with "A&C"), or two nodes would get one subnet.
      if (key.split('&').some((part) => this.q.sharing.get(part, `${part}&%`, `%&${part}`))) return null;
      const expiresAt = ttlMs === null ? null : this.now() + ttlMs;
      const revision = this.record('put', key, value, expiresAt);
      this.q.insert.run(key, value, expiresAt, revision);
      return { key, lease: { ...lease, expiresAt }, modRevision: revision };
    });
  }

  async renew(lease: Lease, ttlMs: number | null, expectRevision?: number): Promise<StoredLease> {
    const key = leaseKey(lease);
    checkTtl(ttlMs, 'renew', this.description, key);
    const value = encodeAttrs(lease.attrs);
    return this.write('renew', key, () => {
      this.sweepLocked();
      const row = this.live(key);
      if (!row) throw new LeaseGoneError(this.description, key, 'absent');
      if (expectRevision !== undefined && row.mod_revision !== expectRevision) throw new LeaseGoneError(this.description, key, 'changed');
      const expiresAt = ttlMs === null ? null : this.now() + ttlMs;
      const revision = this.record('put', key, value, expiresAt);
      this.q.update.run(value, expiresAt, revision, key);
      return { key, lease: { ...lease, expiresAt }, modRevision: revision };
    });
  }

  async remove(key: string, expectRevision?: number): Promise<boolean> {
    return this.write('remove', key, () => {
      this.sweepLocked();
      const row = this.live(key);
      if (!row || (expectRevision !== undefined && row.mod_revision !== expectRevision)) return false;
      this.q.delete.run(key);
      this.record('delete', key, row.value, row.expires_at);
      return true;
    });
  }

  /** Changes from `from` on (at most one batch), or CompactedError. */
  readEvents(from: number): { events: WatchEvent[]; more: boolean } {
    const BATCH = 256;
    const rows = this.read('watch', () => {
      const compacted = this.q.compacted.get()!;
      if (from <= compacted) throw new CompactedError(this.description, from, compacted);
      return this.q.events.all(from, BATCH);
    });
    const events = rows.map((r): WatchEvent => {
      if (r.type === 'delete') {
        let lease: Lease | undefined;
        try {
          lease = r.value === null ? undefined : decodeRow(r.key, r.value, r.expires_at);
        } catch {
          lease = undefined;
        }
        return { type: 'delete', key: r.key, revision: r.revision, ...(lease ? { lease } : {}) };
      }
      try {
        return { type: 'put', key: r.key, lease: decodeRow(r.key, r.value ?? '', r.expires_at), revision: r.revision };
      } catch (e) {
        return { type: 'put', key: r.key, error: errorText(e), revision: r.revision };
      }
    });
    return { events, more: rows.length === BATCH };
  }

  watch(fromRevision: number, onEvent: (e: WatchEvent) => void, onError: (e: Error) => void): Watcher {
    this.check('watch');
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) throw new StoreError('watch', this.description, `the first revision must be a positive integer, got ${fromRevision}`);
    const w = new PollWatch(this, fromRevision, onEvent, onError, this.pollIntervalMs);
    this.watches.add(w);
    return w;
  }

  /** A watch that ended. */
  forget(w: PollWatch): void {
    this.watches.delete(w);
  }

  /** This process wrote: its own watchers need not wait for their next poll. */
  private wake(): void {
    for (const w of this.watches) w.schedule(0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watches]) w.close();
    this.closed = true;
    this.db.close();
  }
}
