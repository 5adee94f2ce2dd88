// The etcd v3 store (`--store etcd:URL[,URL]`, flannel's `--etcd-endpoints`):
// flannel's own layout, so flanneld and twill nodes can share one etcd.
//
//   <prefix>/config            net-conf.json (readNetworkConfig)
//   <prefix>/subnets/<key>     flannel's LeaseAttrs JSON, attached to an etcd
//                              lease of the TTL (no lease: a reservation)
//
// etcd is the model of SubnetStore, so the mapping is direct: its revision is
// the store's, create is flannel's "put if version(key) == 0" transaction,
// renew/remove compare mod_revision, and expiry is etcd revoking the key's
// lease, which its watch reports as a delete. Like flanneld, a renewal puts the
// key with a new lease rather than keeping the old one alive, so a lease is
// only ever extended by a write that every watcher sees.
//
// A value's expiry is not in the key-value itself: it is the remaining TTL of
// its etcd lease (whole seconds, so expiresAt is a lower bound). This store
// remembers the leases it granted; others' it asks etcd (LeaseTimeToLive),
// once per distinct lease per list.
//
// Every operation has one deadline (timeoutMs), retries on other members
// included: an unreachable etcd is a StoreError naming the endpoints and what
// to check, never a hang. Calls that fail on the way (a member down, an
// election) are tried again, on another member, until that deadline. A
// transaction retried after its first attempt did commit would then see its own
// write as someone else's, so each failed compare also reads the key back and a
// key carrying the etcd lease this very call granted is recognised as ours (a
// retried remove cannot tell: it may report false for a key it did delete).
//
// The watch is our own stream (not etcd3's Watcher, which resumes from the
// response header revision and can skip events it had not delivered): it tracks
// the next revision it owes, and when its member goes away it reopens on
// another one from exactly there, for up to timeoutMs, before it reports a
// StoreError.
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import {
  ClientClosedError, CompareResult, CompareTarget, Etcd3, EtcdAuthenticationFailedError, EtcdInvalidAuthTokenError, EtcdPermissionDeniedError,
  GRPCDeadlineExceededError, GRPCUnauthenticatedError, GRPCUnavailableError, Range, isRecoverableError,
  type IDuplexStream, type IKeyValue, type IWatchRequest, type IWatchResponse, type KVClient,
} from 'etcd3';
import { decodeAttrs, encodeAttrs, leaseKey, parseLeaseKey, type Lease } from './lease.js';
import { CompactedError, LeaseGoneError, StoreError, type ListResult, type MalformedLease, type StoredLease, type SubnetStore, type WatchEvent, type Watcher } from './store.js';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';
export const DEFAULT_ETCD_TIMEOUT_MS = 5000;

export interface EtcdStoreOptions {
  /** Client URLs: http://10.0.0.1:2379 (a bare host:port means http). */
  endpoints: string[];
  /** flannel's --etcd-prefix. */
  prefix?: string;
  /** TLS (flannel's --etcd-cafile, --etcd-certfile, --etcd-keyfile): PEM files. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
  /** How long one operation may take, retries included, before it fails (ms). */
  timeoutMs?: number;
}

type CallOptions = NonNullable<Parameters<KVClient['range']>[1]>;

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** A gRPC error's message without the status code, the wrapping and the timestamps. */
function grpcDetail(text: string): string {
  return text
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/^No connection established\. Last error: (Error: )?/, '')
    .replace(/ \(\d{4}-\d\d-\d\dT[^)]*\)/g, '')
    .replace(/\.? Resolution note: *$/, '')
    .replace(/^etcdserver: /, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/** A lease from its key and flannel JSON value; throws on a malformed one. */
function decode(key: string, value: string, expiresAt: number | null): Lease {
  const { subnet, ipv6Subnet } = parseLeaseKey(key);
  return { subnet, ipv6Subnet, attrs: decodeAttrs(value, key), expiresAt };
}

function checkTtl(ttlMs: number | null, op: string, where: string, key: string): void {
  if (ttlMs !== null && !(Number.isSafeInteger(ttlMs) && ttlMs > 0)) {
    throw new StoreError(op, where, `the TTL must be a positive number of milliseconds or null (a reservation), got ${ttlMs}`, key);
  }
}

function normaliseEndpoint(e: string): string {
  const url = /^[a-z]+:\/\//i.test(e) ? e : `http://${e}`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`${JSON.stringify(e)} is not an etcd client URL (expected e.g. http://10.0.0.1:2379)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`${JSON.stringify(e)}: an etcd endpoint is http:// or https://`);
  return `${u.protocol}//${u.host}`;
}

export class EtcdStore implements SubnetStore {
  readonly description: string;
  readonly endpoints: string[];
  readonly prefix: string;
  readonly timeoutMs: number;
  private readonly subnets: string;
  private readonly client: Etcd3;
  /** Expiry (ms since the epoch) of the etcd leases this store granted, by lease ID. */
  private readonly granted = new Map<string, number>();
  private readonly watches = new Set<EtcdWatch>();
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    this.prefix = (opts.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, '');
    const where = `etcd:${opts.endpoints.join(',')}${this.prefix === DEFAULT_ETCD_PREFIX ? '' : ` (prefix ${this.prefix})`}`;
    const fail = (message: string, cause?: unknown) => new StoreError('open', where, message, undefined, { cause });
    if (opts.endpoints.length === 0) throw fail('no endpoints given (--etcd-endpoints)');
    try {
      this.endpoints = opts.endpoints.map(normaliseEndpoint);
    } catch (e) {
      throw fail(errorText(e), e);
    }
    this.description = `etcd:${this.endpoints.join(',')}${this.prefix === DEFAULT_ETCD_PREFIX ? '' : ` (prefix ${this.prefix})`}`;
    if (!this.prefix.startsWith('/')) throw fail(`the prefix must start with "/", got ${JSON.stringify(opts.prefix)}`);
    this.subnets = `${this.prefix}/subnets/`;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw fail(`timeoutMs must be positive, got ${this.timeoutMs}`);
    const read = (what: string, path: string | undefined, flag: string) => {
      if (path === undefined) return undefined;
      try {
        return readFileSync(path);
      } catch (e) {
        throw fail(`cannot read the ${what} ${path} (${flag}): ${errorText(e)}`, e);
      }
    };
    const ca = read('CA certificate', opts.caFile, '--etcd-cafile');
    const cert = read('client certificate', opts.certFile, '--etcd-certfile');
    const key = read('client key', opts.keyFile, '--etcd-keyfile');
    if ((cert === undefined) !== (key === undefined)) throw fail('a client certificate needs its key and the other way round (--etcd-certfile with --etcd-keyfile)');
    if ((opts.username === undefined) !== (opts.password === undefined)) throw fail('a username needs a password and the other way round (--etcd-username with --etcd-password)');
    if (this.endpoints.some((e) => e.startsWith('https:')) !== this.endpoints.every((e) => e.startsWith('https:'))) throw fail('the endpoints mix http:// and https://');
    if ((ca || cert) && !this.endpoints[0]!.startsWith('https:')) throw fail('TLS files are given but the endpoints are http://: use https:// URLs');
    try {
      this.client = new Etcd3({
        hosts: this.endpoints,
        // Without --etcd-cafile the server is checked against the usual public CAs (Node's), as flanneld does with Go's.
        ...(ca || cert ? { credentials: { rootCertificate: ca ?? Buffer.from(rootCertificates.join('\n')), ...(cert ? { certChain: cert, privateKey: key } : {}) } } : {}),
        ...(opts.username !== undefined ? { auth: { username: opts.username, password: opts.password! } } : {}),
        // Calls we make carry their own deadline; this one bounds the client's own (the auth token).
        defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
        // A member that vanishes without a TCP reset (a partition) is noticed by pings, not by a silent watch.
        grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': this.timeoutMs },
      });
    } catch (e) {
      throw fail(errorText(e), e);
    }
  }

  private check(op: string, key?: string): void {
    if (this.closed) throw new StoreError(op, this.description, 'the store is closed', key);
  }

  /** The deadline of an operation that starts now, for each of its calls. */
  private deadline(): CallOptions {
    return { deadline: Date.now() + this.timeoutMs };
  }

  /** A client error as a StoreError that says what to do about it. */
  wrap(op: string, key: string | undefined, e: unknown): StoreError {
    if (e instanceof StoreError) return e;
    const text = errorText(e);
    const at = this.endpoints.join(', ');
    const detail = grpcDetail(text);
    let message: string;
    if (/SSL routines|certificate|TLS|handshake/i.test(text)) {
      const why = /alert bad certificate|alert certificate required|alert handshake failure/.test(text)
        ? 'etcd refused this client (a client certificate it trusts is needed: --etcd-certfile, --etcd-keyfile)'
        : /verify|self[- ]signed|issuer/i.test(text)
          ? `etcd's certificate is not signed by a CA this client trusts (${detail}; --etcd-cafile)`
          : `${detail} (--etcd-cafile, --etcd-certfile, --etcd-keyfile)`;
      message = `TLS with etcd at ${at} failed: ${why}`;
    } else if (e instanceof GRPCDeadlineExceededError || /deadline exceeded/i.test(text)) {
      message = `no answer from etcd at ${at} within ${this.timeoutMs} ms — is etcd running and reachable, with a leader? (--etcd-endpoints)`;
    } else if (e instanceof GRPCUnavailableError || /circuit breaker is open|not set up within|No connection established|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|ETIMEDOUT/.test(text)) {
      const why = /circuit breaker is open/.test(text)
        ? 'it failed on the last tries (the client waits 5 s before trying a failed member again)'
        : (/(?:connect|getaddrinfo) E[A-Z]+/.exec(text)?.[0] ?? detail);
      const tlsHint = /Failed to connect/.test(text) && at.startsWith('http:') ? ' If etcd serves TLS, use https:// URLs.' : '';
      message = `cannot reach etcd at ${at}: ${why} — is etcd running? (--etcd-endpoints)${tlsHint}`;
    } else if (e instanceof EtcdAuthenticationFailedError || e instanceof GRPCUnauthenticatedError || e instanceof EtcdInvalidAuthTokenError || /user name is empty|authentication failed|invalid auth token/.test(text)) {
      message = `etcd at ${at} refused the credentials: ${detail} (--etcd-username, --etcd-password)`;
    } else if (e instanceof EtcdPermissionDeniedError) {
      message = `etcd at ${at} denied access under ${this.prefix}: ${detail}`;
    } else if (e instanceof ClientClosedError) {
      message = 'the store is closed';
    } else {
      message = `etcd at ${at}: ${detail}`;
    }
    return new StoreError(op, this.description, message, key, { cause: e });
  }

  /**
   * One call, again on a transient failure (a member down, an election) until
   * the operation's deadline: the client's own retries give up after three
   * tries and skip a member for 5 s once it failed thrice, which a failover
   * easily exhausts.
   */
  private async retry<T>(o: CallOptions, fn: () => Promise<T>): Promise<T> {
    const deadline = typeof o.deadline === 'number' ? o.deadline : Date.now() + this.timeoutMs;
    // What went wrong on the wire, rather than "the circuit breaker is open" that follows it.
    let cause: unknown = null;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        const skipped = e instanceof Error && /circuit breaker is open/.test(e.message);
        if (!skipped) cause = e;
        const transient = e instanceof Error && (skipped || isRecoverableError(e) || /leader changed|no leader|not capable/i.test(e.message));
        const pause = Math.min(50 * attempt, 500);
        if (!transient || this.closed || Date.now() + pause >= deadline) throw cause ?? e;
        await new Promise((r) => setTimeout(r, pause));
      }
    }
  }

  private async run<T>(op: string, key: string | undefined, fn: (o: CallOptions) => Promise<T>): Promise<T> {
    this.check(op, key);
    try {
      return await fn(this.deadline());
    } catch (e) {
      throw this.wrap(op, key, e);
    }
  }

  /** Every key under <prefix>/subnets/. */
  private subnetsRange(): { key: Buffer; range_end: Buffer } {
    const r = Range.prefix(this.subnets);
    return { key: r.start, range_end: r.end };
  }

  async readNetworkConfig(): Promise<string | null> {
    return this.run('read config', `${this.prefix}/config`, async (o) => {
      const res = await this.retry(o, () => this.client.kv.range({ key: Buffer.from(`${this.prefix}/config`) }, o));
      return res.kvs[0]?.value.toString() ?? null;
    });
  }

  /** An etcd lease of ceil(ttlMs) whole seconds (etcd may round it up to its minimum); its ID and expiry. */
  private async grant(ttlMs: number, o: CallOptions): Promise<{ id: string; expiresAt: number }> {
    const t0 = Date.now();
    const g = await this.retry(o, () => this.client.leaseClient.leaseGrant({ TTL: Math.ceil(ttlMs / 1000) }, o));
    if (g.error) throw new Error(`etcd refused a lease: ${g.error}`);
    // The lease started at the leader, somewhere between t0 and now: t0 errs on the early side.
    const expiresAt = t0 + Number(g.TTL) * 1000;
    const now = Date.now();
    for (const [id, at] of this.granted) if (at < now) this.granted.delete(id);
    this.granted.set(g.ID, expiresAt);
    return { id: g.ID, expiresAt };
  }

  /** Best effort: a lease left behind only holds nothing until its TTL runs out. */
  private async revoke(id: string, onlyIfEmpty: boolean): Promise<void> {
    if (id === '0') return;
    try {
      const o = this.deadline();
      // A lease that still holds other keys is someone else's arrangement: leave it.
      if (onlyIfEmpty && (await this.retry(o, () => this.client.leaseClient.leaseTimeToLive({ ID: id, keys: true }, o))).keys.length > 0) return;
      await this.retry(o, () => this.client.leaseClient.leaseRevoke({ ID: id }, o));
    } catch {
      // Expired already, or etcd is away: the TTL cleans up.
    }
    this.granted.delete(id);
  }

  /** Expiry of the keys on etcd lease `id`; null: no lease (a reservation); -1: already expired. */
  private async expiryOf(id: string, o: CallOptions): Promise<number | null> {
    if (id === '0') return null;
    const known = this.granted.get(id);
    if (known !== undefined) return known;
    const t0 = Date.now();
    const r = await this.retry(o, () => this.client.leaseClient.leaseTimeToLive({ ID: id }, o));
    const ttl = Number(r.TTL);
    return ttl < 0 ? -1 : t0 + ttl * 1000;
  }

  async list(): Promise<ListResult> {
    return this.run('list', undefined, async (o) => {
      const res = await this.retry(o, () => this.client.kv.range(this.subnetsRange(), o));
      const ids = [...new Set(res.kvs.map((kv) => kv.lease))];
      const expiry = new Map(await Promise.all(ids.map(async (id) => [id, await this.expiryOf(id, o)] as const)));
      const leases: StoredLease[] = [];
      const malformed: MalformedLease[] = [];
      for (const kv of res.kvs) {
        const key = kv.key.toString().slice(this.subnets.length);
        const expiresAt = expiry.get(kv.lease) ?? null;
        // Its lease ran out a moment ago; etcd's delete of it follows at a later revision.
        if (expiresAt === -1) continue;
        try {
          leases.push({ key, lease: decode(key, kv.value.toString(), expiresAt), modRevision: Number(kv.mod_revision) });
        } catch (e) {
          malformed.push({ key, error: errorText(e) });
        }
      }
      return { leases, revision: Number(res.header.revision), malformed };
    });
  }

  async create(lease: Lease, ttlMs: number | null): Promise<StoredLease | null> {
    const key = leaseKey(lease);
    checkTtl(ttlMs, 'create', this.description, key);
    const k = Buffer.from(this.subnets + key);
    let leaseId = '0';
    return this.run('create', key, async (o) => {
      let expiresAt: number | null = null;
      try {
        if (ttlMs !== null) ({ id: leaseId, expiresAt } = await this.grant(ttlMs, o));
        const r = await this.retry(o, () => this.client.kv.txn({
          compare: [{ key: k, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }],
          success: [{ request_put: { key: k, value: Buffer.from(encodeAttrs(lease.attrs)), lease: leaseId } }],
          failure: [{ request_range: { key: k } }],
        }, o));
        if (r.succeeded) return { key, lease: { ...lease, expiresAt }, modRevision: Number(r.header.revision) };
        const current = r.responses[0]?.response_range.kvs[0];
        if (leaseId !== '0' && current?.lease === leaseId) return { key, lease: { ...lease, expiresAt }, modRevision: Number(current.mod_revision) };
      } catch (e) {
        await this.revoke(leaseId, false);
        throw e;
      }
      await this.revoke(leaseId, false);
      return null;
    });
  }

  async renew(lease: Lease, ttlMs: number | null, expectRevision?: number): Promise<StoredLease> {
    const key = leaseKey(lease);
    checkTtl(ttlMs, 'renew', this.description, key);
    const k = Buffer.from(this.subnets + key);
    let leaseId = '0';
    return this.run('renew', key, async (o) => {
      let expiresAt: number | null = null;
      let previous: IKeyValue | undefined;
      let modRevision: number;
      try {
        if (ttlMs !== null) ({ id: leaseId, expiresAt } = await this.grant(ttlMs, o));
        const r = await this.retry(o, () => this.client.kv.txn({
          compare: [expectRevision === undefined
            ? { key: k, target: CompareTarget.Version, result: CompareResult.Greater, version: 0 }
            : { key: k, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectRevision }],
          success: [{ request_put: { key: k, value: Buffer.from(encodeAttrs(lease.attrs)), lease: leaseId, prev_kv: true } }],
          failure: [{ request_range: { key: k } }],
        }, o));
        if (r.succeeded) {
          previous = r.responses[0]?.response_put.prev_kv ?? undefined;
          modRevision = Number(r.header.revision);
        } else {
          const current = r.responses[0]?.response_range.kvs[0];
          if (!(leaseId !== '0' && current?.lease === leaseId)) {
            await this.revoke(leaseId, false);
            throw new LeaseGoneError(this.description, key, current ? 'changed' : 'absent');
          }
          modRevision = Number(current.mod_revision);
        }
      } catch (e) {
        if (!(e instanceof LeaseGoneError)) await this.revoke(leaseId, false);
        throw e;
      }
      if (previous && previous.lease !== leaseId) await this.revoke(previous.lease, true);
      return { key, lease: { ...lease, expiresAt }, modRevision };
    });
  }

  async remove(key: string, expectRevision?: number): Promise<boolean> {
    const k = Buffer.from(this.subnets + key);
    return this.run('remove', key, async (o) => {
      const r = await this.retry(o, () => this.client.kv.txn({
        compare: [expectRevision === undefined
          ? { key: k, target: CompareTarget.Version, result: CompareResult.Greater, version: 0 }
          : { key: k, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectRevision }],
        success: [{ request_delete_range: { key: k, prev_kv: true } }],
      }, o));
      const gone = r.succeeded ? r.responses[0]?.response_delete_range.prev_kvs[0] : undefined;
      if (gone) await this.revoke(gone.lease, true);
      return gone !== undefined;
    });
  }

  watch(fromRevision: number, onEvent: (e: WatchEvent) => void, onError: (e: Error) => void): Watcher {
    this.check('watch');
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) throw new StoreError('watch', this.description, `the first revision must be a positive integer, got ${fromRevision}`);
    const w = new EtcdWatch(this, fromRevision, onEvent, onError);
    this.watches.add(w);
    return w;
  }

  /** For EtcdWatch: a new watch stream on some member. */
  openStream(): Promise<IDuplexStream<IWatchRequest, IWatchResponse>> {
    return this.client.watchClient.watch();
  }

  /** For EtcdWatch: the events of one watch response, decoded (a put's expiry needs its lease). */
  async decodeEvents(res: IWatchResponse, from: number): Promise<WatchEvent[]> {
    const out: WatchEvent[] = [];
    const o = this.deadline();
    for (const ev of res.events) {
      const revision = Number(ev.kv.mod_revision);
      // A reopened stream may repeat what the old one delivered.
      if (revision < from) continue;
      const key = ev.kv.key.toString().slice(this.subnets.length);
      // proto-loader hands enums over as their proto names ("DELETE"), whatever the typings say.
      if (String(ev.type).toUpperCase() === 'DELETE') {
        let lease: Lease | undefined;
        if (ev.prev_kv) {
          try {
            lease = decode(key, ev.prev_kv.value.toString(), this.granted.get(ev.prev_kv.lease) ?? (ev.prev_kv.lease === '0' ? null : Date.now()));
          } catch {
            lease = undefined;
          }
        }
        out.push({ type: 'delete', key, revision, ...(lease ? { lease } : {}) });
        continue;
      }
      let expiresAt = await this.expiryOf(ev.kv.lease, o);
      if (expiresAt === -1) expiresAt = Date.now();
      try {
        out.push({ type: 'put', key, lease: decode(key, ev.kv.value.toString(), expiresAt), revision });
      } catch (e) {
        out.push({ type: 'put', key, error: errorText(e), revision });
      }
    }
    return out;
  }

  /** For EtcdWatch: the watch request for the subnets from `start`. */
  watchRequest(start: number): IWatchRequest {
    return { create_request: { ...this.subnetsRange(), start_revision: start, prev_kv: true } };
  }

  /** A watch that ended. */
  forget(w: EtcdWatch): void {
    this.watches.delete(w);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watches]) w.close();
    this.closed = true;
    this.client.close();
  }
}

class EtcdWatch implements Watcher {
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | null = null;
  private closed = false;
  /** Responses are decoded one after the other (a put may wait for its lease's TTL): events stay in order. */
  private chain: Promise<void> = Promise.resolve();
  /** When the current outage began (null: connected), for the give-up deadline. */
  private failingSince: number | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: EtcdStore,
    /** The first revision not yet delivered. */
    private next: number,
    private readonly onEvent: (e: WatchEvent) => void,
    private readonly onError: (e: Error) => void,
  ) {
    void this.open();
  }

  private async open(): Promise<void> {
    if (this.closed) return;
    this.failingSince ??= Date.now();
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      stream = await this.store.openStream();
    } catch (e) {
      this.lost(e);
      return;
    }
    if (this.closed) {
      stream.cancel();
      return;
    }
    this.stream = stream;
    // Not created in time: this member does not answer (the give-up deadline decides what next).
    this.timer = setTimeout(() => this.drop(stream, new Error(`the watch was not set up within ${this.store.timeoutMs} ms`)), this.store.timeoutMs);
    stream.on('data', (res) => {
      if (this.stream !== stream) return;
      this.chain = this.chain.then(() => this.handle(stream, res));
    });
    stream.on('error', (e) => this.drop(stream, e));
    stream.on('end', () => this.drop(stream, new Error('etcd ended the watch stream')));
    stream.write(this.store.watchRequest(this.next));
  }

  private async handle(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): Promise<void> {
    if (this.closed || this.stream !== stream) return;
    const compacted = Number(res.compact_revision);
    if (compacted > 0) {
      // etcd keeps revision `compacted` itself and everything after it.
      this.fail(new CompactedError(this.store.description, this.next, compacted - 1));
      return;
    }
    if (res.canceled) {
      this.fail(new StoreError('watch', this.store.description, `etcd cancelled the watch: ${res.cancel_reason || 'no reason given'}`));
      return;
    }
    if (res.created) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.failingSince = null;
    }
    if (res.events.length === 0) return;
    let events: WatchEvent[];
    try {
      events = await this.store.decodeEvents(res, this.next);
    } catch (e) {
      this.fail(this.store.wrap('watch', undefined, e));
      return;
    }
    for (const e of events) {
      if (this.closed || this.stream !== stream) return;
      this.next = e.revision + 1;
      try {
        this.onEvent(e);
      } catch (err) {
        this.fail(err);
        return;
      }
    }
  }

  /** The stream broke: reopen from `next` on any member until the outage is older than the timeout. */
  private drop(stream: IDuplexStream<IWatchRequest, IWatchResponse>, e: unknown): void {
    if (this.stream !== stream || this.closed) return;
    this.stream = null;
    stream.cancel();
    this.lost(e);
  }

  private lost(e: unknown): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.failingSince ??= Date.now();
    if (Date.now() - this.failingSince >= this.store.timeoutMs) {
      this.fail(this.store.wrap('watch', undefined, e));
      return;
    }
    // Wait for the decoding in flight, so the new stream starts after what it delivered.
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.chain.then(() => this.open());
    }, 100);
  }

  private fail(e: unknown): void {
    if (this.closed) return;
    this.close();
    this.onError(e instanceof Error ? e : new Error(String(e)));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const s = this.stream;
    this.stream = null;
    s?.cancel();
    this.store.forget(this);
  }
}
