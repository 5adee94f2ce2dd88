// Addresses as numbers, for range arithmetic (IPv6 needs BigInt).
import ipaddr from 'ipaddr.js';
import { dottedQuad } from '../kernel/ip.js';

export type Family = 4 | 6;

export interface IpNum {
  family: Family;
  value: bigint;
}

const bits = (f: Family): bigint => (f === 4 ? 32n : 128n);

/** A plain address ("10.1.2.3", "fd00::1"), or null. IPv4-mapped IPv6 counts as IPv4, as Go's To4 does. */
export function parseAddr(text: string): IpNum | null {
  // host-local parses every allocation file's name on each ADD: plain IPv4 the short way.
  const quad = typeof text === 'string' ? dottedQuad(text) : null;
  if (quad) return { family: 4, value: BigInt(((quad[0] << 24) | (quad[1] << 16) | (quad[2] << 8) | quad[3]) >>> 0) };
  if (typeof text !== 'string' || !ipaddr.isValid(text) || text.includes('/')) return null;
  if (!text.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(text)) return null;
  let addr = ipaddr.parse(text);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
  const bytes = addr.toByteArray();
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { family: addr.kind() === 'ipv4' ? 4 : 6, value };
}

export function formatAddr(ip: IpNum): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  }
  const n = 16;
  const bytes: number[] = new Array<number>(n);
  let v = ip.value;
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

export interface Cidr {
  ip: IpNum;
  prefix: number;
}

/** "10.1.0.0/16" → address + prefix (host bits kept: callers decide). */
export function parseCidr(text: string): Cidr | null {
  if (typeof text !== 'string') return null;
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const ip = parseAddr(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > Number(bits(ip.family))) return null;
  return { ip, prefix };
}

export function mask(family: Family, prefix: number): bigint {
  const total = bits(family);
  return ((1n << total) - 1n) ^ ((1n << (total - BigInt(prefix))) - 1n);
}

export const networkOf = (c: Cidr): bigint => c.ip.value & mask(c.ip.family, c.prefix);

export function lastOf(c: Cidr): bigint {
  return networkOf(c) | (((1n << bits(c.ip.family)) - 1n) ^ mask(c.ip.family, c.prefix));
}

export function containsAddr(c: Cidr, ip: IpNum): boolean {
  return ip.family === c.ip.family && (ip.value & mask(c.ip.family, c.prefix)) === networkOf(c);
}

export const formatCidr = (c: Cidr): string => `${formatAddr(c.ip)}/${c.prefix}`;
