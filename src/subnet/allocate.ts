// Which subnet a node takes, in flannel's order: its own lease again (same
// public IP, still inside the configured range and length), else the subnet of
// its old subnet.env if nobody holds it, else a random free one among the first
// candidates. The store's compare-and-swap decides races; this only proposes.
import { formatAddr, formatCidr, type Cidr } from '../ipam/addr.js';
import type { FamilyConfig } from './config.js';
import type { Lease } from './lease.js';

export const RANDOM_CANDIDATES = 100;

export class OutOfSubnetsError extends Error {}

const sameCidr = (a: Cidr, b: Cidr) => a.ip.family === b.ip.family && a.ip.value === b.ip.value && a.prefix === b.prefix;

/** Inside SubnetMin..SubnetMax, with the configured length. */
export function fits(f: FamilyConfig, c: Cidr): boolean {
  return c.ip.family === f.network.ip.family && c.prefix === f.subnetLen && c.ip.value >= f.subnetMin.value && c.ip.value <= f.subnetMax.value;
}

/** Free subnets from SubnetMin upwards, at most `limit`; one that overlaps any lease (of any length: SubnetLen may have changed) is taken. */
export function freeSubnets(f: FamilyConfig, taken: Cidr[], limit = RANDOM_CANDIDATES): Cidr[] {
  const family = f.network.ip.family;
  const bits = family === 4 ? 32 : 128;
  const step = 1n << BigInt(bits - f.subnetLen);
  const spans = taken.filter((t) => t.ip.family === family).map((t) => {
    const size = 1n << BigInt(bits - t.prefix);
    const first = t.ip.value & ~(size - 1n);
    return [first, first + size - 1n] as const;
  });
  const out: Cidr[] = [];
  for (let v = f.subnetMin.value; v <= f.subnetMax.value && out.length < limit; v += step) {
    const last = v + step - 1n;
    if (!spans.some(([a, b]) => a <= last && v <= b)) out.push({ ip: { family, value: v }, prefix: f.subnetLen });
  }
  return out;
}

export interface Preferences {
  /** This node's public IP of that family: its lease, if any, is taken again. */
  publicIp: string | null;
  /** The subnet in the old subnet.env. */
  previous: Cidr | null;
}

export type Choice = { kind: 'own-lease'; lease: Lease } | { kind: 'previous' | 'random'; subnet: Cidr };

export function chooseSubnet(f: FamilyConfig, leases: Lease[], prefs: Preferences, random: () => number = Math.random): Choice {
  const family = f.network.ip.family;
  const subnetOf = (l: Lease) => (family === 4 ? l.subnet : l.ipv6Subnet);
  const publicOf = (l: Lease) => (family === 4 ? l.attrs.publicIp : l.attrs.publicIpv6);
  if (prefs.publicIp) {
    const own = leases.find((l) => publicOf(l) === prefs.publicIp && subnetOf(l) !== null && fits(f, subnetOf(l)!));
    if (own) return { kind: 'own-lease', lease: own };
  }
  const taken = leases.map(subnetOf).filter((c): c is Cidr => c !== null);
  if (prefs.previous && fits(f, prefs.previous) && !taken.some((t) => sameCidr(t, prefs.previous!))) {
    return { kind: 'previous', subnet: prefs.previous };
  }
  const free = freeSubnets(f, taken);
  if (free.length === 0) {
    throw new OutOfSubnetsError(
      `out of subnets: every /${f.subnetLen} of ${formatCidr(f.network)} between ${formatAddr(f.subnetMin)} and ${formatAddr(f.subnetMax)} is leased ` +
        `(${taken.length} leases); widen Network or SubnetMin/SubnetMax, shorten SubnetLen, or remove leases of nodes that are gone`,
    );
  }
  return { kind: 'random', subnet: free[Math.floor(random() * free.length)]! };
}
