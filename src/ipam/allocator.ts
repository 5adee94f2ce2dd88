// Handing out addresses from a range set, round-robin from the last one handed
// out, as the reference host-local does (so mixing the two keeps the order).
import { formatAddr, type IpNum } from './addr.js';
import type { Range, RangeSet } from './range.js';
import type { DiskStore, Owner } from './store.js';

export interface Allocated {
  /** Address with the range's prefix, e.g. 10.244.1.5/24. */
  address: string;
  ip: IpNum;
  gateway: IpNum | null;
}

export class AllocationError extends Error {}

function* candidates(set: RangeSet, last: IpNum | null): Generator<{ ip: IpNum; range: Range }> {
  const ranges = set.ranges;
  let idx = 0;
  let cur: bigint | null = null;
  if (last && set.contains(last)) {
    idx = ranges.findIndex((r) => r.contains(last));
    cur = last.value;
  }
  let startValue: bigint | null = null;
  let startIdx = -1;
  for (;;) {
    let r = ranges[idx]!;
    if (cur === null) {
      cur = r.start.value;
    } else if (cur === r.end.value) {
      idx = (idx + 1) % ranges.length;
      r = ranges[idx]!;
      cur = r.start.value;
    } else {
      cur += 1n;
    }
    if (startValue === null) {
      startValue = cur;
      startIdx = idx;
    } else if (cur === startValue && idx === startIdx) {
      return; // went all the way round
    }
    if (r.gateway && r.gateway.value === cur) continue;
    yield { ip: { family: r.family, value: cur }, range: r };
  }
}

export class IpAllocator {
  constructor(
    private readonly set: RangeSet,
    private readonly store: DiskStore,
    private readonly rangeSetIndex: number,
  ) {}

  /** Call under the store's lock. */
  allocate(owner: Owner, requested: IpNum | null): Allocated {
    if (requested) {
      const r = this.set.rangeFor(requested);
      if (!r) throw new AllocationError(`requested IP ${formatAddr(requested)} is not in range set ${this.set.toString()}`);
      if (r.gateway && r.gateway.value === requested.value) throw new AllocationError(`requested IP ${formatAddr(requested)} is the subnet's gateway`);
      if (!this.store.reserve(owner, requested, this.rangeSetIndex)) {
        throw new AllocationError(`requested IP address ${formatAddr(requested)} is not available in range set ${this.set.toString()}`);
      }
      return { address: `${formatAddr(requested)}/${r.subnet.prefix}`, ip: requested, gateway: r.gateway };
    }
    // The spec forbids a second allocation for the same container and interface.
    for (const a of this.store.findByOwner(owner)) {
      if (this.set.contains(a.ip)) {
        throw new AllocationError(`${formatAddr(a.ip)} has been allocated to ${owner.containerId}, duplicate allocation is not allowed`);
      }
    }
    for (const c of candidates(this.set, this.store.lastReserved(this.rangeSetIndex))) {
      if (this.store.reserve(owner, c.ip, this.rangeSetIndex)) {
        return { address: `${formatAddr(c.ip)}/${c.range.subnet.prefix}`, ip: c.ip, gateway: c.range.gateway };
      }
    }
    throw new AllocationError(`no IP addresses available in range set: ${this.set.toString()}`);
  }
}
