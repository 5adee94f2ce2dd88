// The seam between "who owns which subnet" (src/subnet) and "how packets get
// there": a backend turns lease events into kernel state on this node.
import type { Lease } from '../subnet/lease.js';

/** Route protocol number on every route twill installs (RTPROT_* values up to 255; 87 is unassigned): twill removes only its own. */
export const TWILL_ROUTE_PROTOCOL = 87;

export interface LocalLease {
  /** This node's lease (its subnet is what the overlay device carries). */
  lease: Lease;
}

export interface Backend {
  readonly type: string;
  /** Programs the path to a remote node's subnet; `previous` is its last known lease (an update). */
  addPeer(lease: Lease, previous: Lease | null): Promise<void>;
  /** Removes what addPeer installed; succeeds when it is already gone. */
  removePeer(lease: Lease): Promise<void>;
}
