// The seam between "who owns which subnet" (src/subnet) and "how packets get
// there": a backend turns leases into kernel state on this node.
//
// Two ways in, both idempotent: addPeer/removePeer for one lease event (the fast
// path: a new node is reachable as soon as its lease arrives), and sync for the
// whole picture (start-up, and whenever the kernel reports that something twill
// owns was deleted): it compares the kernel with the leases, repairs the
// difference, and removes what twill owns for leases that no longer exist.
import type { KernelEvent } from '../kernel/index.js';
import type { Lease } from '../subnet/lease.js';

/** Route protocol number on every route twill installs (RTPROT_* values up to 255; 87 is unassigned): twill removes only its own. */
export const TWILL_ROUTE_PROTOCOL = 87;

/** One repair sync made, in words ("route 10.244.2.0/24 via 10.244.2.0 dev flannel.1: missing"). */
export interface Repair {
  object: 'device' | 'address' | 'route' | 'neighbour' | 'fdb';
  /** missing: added; wrong: replaced; stale: removed (owned by twill, no lease wants it). */
  kind: 'missing' | 'wrong' | 'stale';
  what: string;
}

export interface Backend {
  /** flannel's BackendType: "vxlan", "host-gw". */
  readonly type: string;
  /** The pod MTU this backend allows (subnet.env's FLANNEL_MTU). */
  readonly mtu: number;
  /** Makes this node's side ready (vxlan: the device with the node's address) before any peer. */
  setup(own: Lease): Promise<Repair[]>;
  /** Programs the path to a remote node's subnet; `previous` is its last known lease (an update). */
  addPeer(lease: Lease, previous: Lease | null): Promise<void>;
  /** Removes what addPeer installed; succeeds when it is already gone. */
  removePeer(lease: Lease): Promise<void>;
  /** Makes the kernel match `own` and `peers` exactly, for what this backend owns; returns the repairs. */
  sync(own: Lease, peers: Lease[]): Promise<Repair[]>;
  /** Why a lease cannot be programmed (e.g. no VtepMAC), or null: sync skips such leases, the agent says so once. */
  problemWith?(lease: Lease): string | null;
  /** Whether a kernel change touches what this backend owns (then a sync may be needed). */
  concerns(ev: KernelEvent): boolean;
}
