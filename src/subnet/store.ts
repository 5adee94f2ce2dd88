// What the lease manager needs from a store of subnet leases, whatever holds
// them: the local SQLite file (local-store.ts), etcd v3 in flannel's layout
// (`<prefix>/subnets/<key>`), or the Kubernetes API. Keys are flannel's
// (leaseKey: "10.244.1.0-24", "10.244.1.0-24&fd00::-64"); values are flannel's
// LeaseAttrs JSON (encodeAttrs), so twill and flanneld can share a store.
//
// The model is etcd's: every change gets the next number of one store-wide
// revision counter; list() returns the state as of a revision, and
// watch(revision + 1) continues from there without a gap or a duplicate. A
// store keeps a bounded history: a watch that starts (or falls) behind it fails
// with CompactedError and the caller lists again.
import type { Lease } from './lease.js';

export interface StoredLease {
  /** flannel's key: leaseKey(lease). */
  key: string;
  /** Subnets from the key, attrs from the value, expiresAt from the TTL (null: a reservation). */
  lease: Lease;
  /** Revision of the change that wrote this value (etcd's mod_revision). */
  modRevision: number;
  /** The node that holds it, where the store knows one (Kubernetes: the Node's name). */
  node?: string;
}

/** A key under the subnets prefix that is not a lease: reported, never fatal. */
export interface MalformedLease {
  key: string;
  error: string;
}

export interface ListResult {
  /** Every live lease (expired ones are absent), reservations included. */
  leases: StoredLease[];
  /** The revision this snapshot is as of: watch from revision + 1. */
  revision: number;
  malformed: MalformedLease[];
}

export type WatchEvent =
  | {
      type: 'put';
      key: string;
      /** Absent when the new value is malformed (then `error` says why). */
      lease?: Lease;
      error?: string;
      revision: number;
    }
  | {
      /** Deleted, or expired (its TTL ran out): either way the subnet is free again. */
      type: 'delete';
      key: string;
      /** The value it had, when the store knows it and it was well-formed. */
      lease?: Lease;
      revision: number;
    };

export interface Watcher {
  /** Stops delivering events; idempotent. */
  close(): void;
}

export interface SubnetStore {
  /** What it is, for messages: "local:/var/lib/twill/leases.db", "etcd:http://10.0.0.1:2379". */
  readonly description: string;

  /**
   * The cluster config (net-conf.json text) the store holds: etcd's
   * `<prefix>/config`. null when this kind of store holds none and the agent
   * reads it from --net-conf FILE (the local store, the Kubernetes ConfigMap).
   */
  readNetworkConfig(): Promise<string | null>;

  list(): Promise<ListResult>;

  /**
   * Compare-and-swap create: writes the lease only if its key does not exist
   * (an expired lease does not exist). null when the key is taken; else the
   * lease as stored (its expiry and revision: renew's expectRevision).
   * ttlMs null: a reservation, which never expires. A store that can do it
   * atomically also refuses a dual-stack key sharing one of its subnets with a
   * live key (the local store does; etcd compares the one key, as flannel).
   */
  create(lease: Lease, ttlMs: number | null): Promise<StoredLease | null>;

  /**
   * Writes new attrs and a new expiry (now + ttlMs; null keeps it a reservation)
   * to an existing, live key; with `expectRevision`, only if the key was not
   * changed since that revision. LeaseGoneError otherwise: it expired, was
   * deleted, or (with expectRevision) someone else wrote it.
   */
  renew(lease: Lease, ttlMs: number | null, expectRevision?: number): Promise<StoredLease>;

  /** Deletes a key (with `expectRevision`, only if unchanged since). false when there was nothing to delete. */
  remove(key: string, expectRevision?: number): Promise<boolean>;

  /**
   * Delivers every change with revision ≥ fromRevision, in revision order, one
   * call per change. The watch ends at the first error it reports: CompactedError
   * when the history it needs is gone (list again, then watch from the new
   * revision + 1), another StoreError when the store failed. An exception thrown
   * by onEvent also ends it and is passed to onError.
   */
  watch(fromRevision: number, onEvent: (e: WatchEvent) => void, onError: (e: Error) => void): Watcher;

  /**
   * Only for a store where a node's subnet is assigned, not chosen (Kubernetes:
   * node.spec.podCIDRs): this node's subnets for the cluster's families. The
   * manager then writes exactly that lease (create, no TTL) instead of choosing
   * one. A StoreError is worth retrying (but not a StoreAccessError); another
   * error is final (no subnet assigned).
   */
  assignedSubnets?(families: { ipv4: boolean; ipv6: boolean }): Promise<Pick<Lease, 'subnet' | 'ipv6Subnet'>>;

  /** Ends every watch and releases the store; idempotent. */
  close(): Promise<void>;
}

/** A store operation failed: says which operation, on which store, for which key. */
export class StoreError extends Error {
  constructor(
    readonly op: string,
    readonly where: string,
    message: string,
    readonly key?: string,
    options?: { cause?: unknown },
  ) {
    super(`${where}: ${op}${key ? ` ${key}` : ''}: ${message}`, options);
  }
}

/**
 * The store refused these credentials (Kubernetes 401 or 403): retrying does
 * not help until someone gives them the rights, so an agent that is starting
 * stops with this message instead of retrying in silence.
 */
export class StoreAccessError extends StoreError {}

/** The watch needs changes the store no longer keeps: list again. */
export class CompactedError extends StoreError {
  constructor(
    where: string,
    /** The first revision the watcher needed. */
    readonly requested: number,
    /** Changes up to and including this revision are gone. */
    readonly compactedThrough: number,
  ) {
    super('watch', where, `revision ${requested} is no longer in the history (compacted through ${compactedThrough}): list again and watch from there`);
  }
}

/** renew on a key that expired, was deleted, or was written by someone else since. */
export class LeaseGoneError extends StoreError {
  constructor(where: string, key: string, readonly reason: 'absent' | 'changed') {
    super('renew', where, reason === 'absent' ? 'the lease no longer exists (expired or deleted)' : 'the lease was written by someone else since it was read', key);
  }
}
