// A node's lease on a subnet, in flannel's shapes: the etcd key names the
// subnet(s) ("10.244.1.0-24", dual stack "10.244.1.0-24&fd00:10:244:1::-64")
// and the value is flannel's LeaseAttrs JSON, so twill and flanneld nodes can
// share one store.
import { formatAddr, formatCidr, networkOf, parseAddr, parseCidr, type Cidr } from '../ipam/addr.js';

export interface LeaseAttrs {
  publicIp: string | null;
  publicIpv6: string | null;
  backendType: string;
  /** Backend-specific, kept as JSON (vxlan: {VNI, VtepMAC}). */
  backendData: unknown;
  backendV6Data: unknown;
}

export interface Lease {
  subnet: Cidr | null;
  ipv6Subnet: Cidr | null;
  attrs: LeaseAttrs;
  /** ms since the epoch; null: a reservation (no TTL), never expires. */
  expiresAt: number | null;
}

export class LeaseFormatError extends Error {}

const keyPart = (c: Cidr) => `${formatAddr(c.ip)}-${c.prefix}`;

export function leaseKey(l: Pick<Lease, 'subnet' | 'ipv6Subnet'>): string {
  if (l.subnet && l.ipv6Subnet) return `${keyPart(l.subnet)}&${keyPart(l.ipv6Subnet)}`;
  if (l.subnet) return keyPart(l.subnet);
  if (l.ipv6Subnet) return keyPart(l.ipv6Subnet);
  throw new LeaseFormatError('a lease needs a subnet');
}

function parsePart(part: string, key: string): Cidr {
  const dash = part.lastIndexOf('-');
  const c = dash > 0 ? parseCidr(`${part.slice(0, dash)}/${part.slice(dash + 1)}`) : null;
  if (!c || networkOf(c) !== c.ip.value) throw new LeaseFormatError(`lease key ${JSON.stringify(key)} does not name a subnet (expected e.g. 10.244.1.0-24)`);
  return c;
}

/** "10.244.1.0-24", "fd00::-64", or both joined by "&" (either order). */
export function parseLeaseKey(key: string): Pick<Lease, 'subnet' | 'ipv6Subnet'> {
  const parts = key.split('&');
  if (parts.length > 2) throw new LeaseFormatError(`lease key ${JSON.stringify(key)} has more than two subnets`);
  let subnet: Cidr | null = null;
  let ipv6Subnet: Cidr | null = null;
  for (const p of parts) {
    const c = parsePart(p, key);
    if (c.ip.family === 4) {
      if (subnet) throw new LeaseFormatError(`lease key ${JSON.stringify(key)} has two IPv4 subnets`);
      subnet = c;
    } else {
      if (ipv6Subnet) throw new LeaseFormatError(`lease key ${JSON.stringify(key)} has two IPv6 subnets`);
      ipv6Subnet = c;
    }
  }
  return { subnet, ipv6Subnet };
}

/** flannel's LeaseAttrs JSON: PublicIP always (as Go writes ip.IP4), the rest when set. */
export function encodeAttrs(a: LeaseAttrs): string {
  const o: Record<string, unknown> = { PublicIP: a.publicIp ?? '0.0.0.0' };
  if (a.publicIpv6) o.PublicIPv6 = a.publicIpv6;
  if (a.backendType) o.BackendType = a.backendType;
  if (a.backendData !== undefined && a.backendData !== null) o.BackendData = a.backendData;
  if (a.backendV6Data !== undefined && a.backendV6Data !== null) o.BackendV6Data = a.backendV6Data;
  return JSON.stringify(o);
}

/** Tolerant of what flannel accepts (Go's case-insensitive keys), strict about what matters. */
export function decodeAttrs(json: string, key: string): LeaseAttrs {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new LeaseFormatError(`lease ${key}: its value is not JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new LeaseFormatError(`lease ${key}: its value must be a JSON object`);
  const m = new Map(Object.entries(raw).map(([k, v]) => [k.toLowerCase(), v as unknown]));
  const ipOf = (k: string, family: 4 | 6): string | null => {
    const v = m.get(k.toLowerCase());
    if (v === undefined || v === null || v === '') return null;
    const ip = typeof v === 'string' ? parseAddr(v) : null;
    if (!ip || ip.family !== family) throw new LeaseFormatError(`lease ${key}: ${k} ${JSON.stringify(v)} is not an IPv${family} address`);
    return formatAddr(ip);
  };
  const publicIp = ipOf('PublicIP', 4);
  const backendType = m.get('backendtype');
  if (backendType !== undefined && typeof backendType !== 'string') throw new LeaseFormatError(`lease ${key}: BackendType must be a string`);
  return {
    publicIp: publicIp === '0.0.0.0' ? null : publicIp,
    publicIpv6: ipOf('PublicIPv6', 6),
    backendType: backendType ?? '',
    backendData: m.get('backenddata') ?? null,
    backendV6Data: m.get('backendv6data') ?? null,
  };
}

export const describeLease = (l: Lease): string =>
  [l.subnet && formatCidr(l.subnet), l.ipv6Subnet && formatCidr(l.ipv6Subnet)].filter(Boolean).join(' + ') +
  ` (${l.attrs.publicIp ?? l.attrs.publicIpv6 ?? 'no public IP'}, ${l.attrs.backendType || 'no backend'})`;
