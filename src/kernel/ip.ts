import ipaddr from 'ipaddr.js';
import { invalidArgument, type ErrorContext } from './errors.js';

export type Family = 4 | 6;

export interface ParsedIp {
  family: Family;
  bytes: Buffer;
  /** Canonical text form (IPv6 compressed). */
  text: string;
}

export interface ParsedCidr extends ParsedIp {
  prefixLen: number;
}

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/**
 * The four bytes of a plain dotted quad ("10.244.1.2": decimal, no leading zeros), else
 * null: the common case, in one regular expression instead of ipaddr.js's four passes.
 * Callers take anything else (IPv6, odd forms) the long way.
 */
export function dottedQuad(value: string): [number, number, number, number] | null {
  const quad = DOTTED_QUAD.exec(value);
  return quad ? [+quad[1]!, +quad[2]!, +quad[3]!, +quad[4]!] : null;
}

export function parseIp(value: string, ctx: ErrorContext): ParsedIp {
  // On every route and neighbour of a sync.
  const quad = dottedQuad(value);
  if (quad) return { family: 4, bytes: Buffer.from(quad), text: value };
  if (!ipaddr.isValid(value) || (value.includes('.') && !ipaddr.IPv4.isValidFourPartDecimal(value) && !value.includes(':'))) {
    throw invalidArgument(ctx, `"${value}" is not an IP address`);
  }
  const addr = ipaddr.parse(value);
  return { family: addr.kind() === 'ipv4' ? 4 : 6, bytes: Buffer.from(addr.toByteArray()), text: addr.toString() };
}

/** "10.1.2.3/24" (host bits allowed: an interface address) → address + prefix. */
export function parseCidr(value: string, ctx: ErrorContext): ParsedCidr {
  const slash = value.indexOf('/');
  if (slash < 0) throw invalidArgument(ctx, `"${value}" is not a CIDR (expected address/prefix, e.g. 10.244.1.0/24)`);
  const ip = parseIp(value.slice(0, slash), ctx);
  const prefixText = value.slice(slash + 1);
  const prefixLen = Number(prefixText);
  const max = ip.family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || prefixLen > max) {
    throw invalidArgument(ctx, `"${value}" has an invalid prefix length (0 to ${max})`);
  }
  return { ...ip, prefixLen };
}

export function formatIp(bytes: Buffer): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  return ipaddr.fromByteArray([...bytes]).toString();
}

export function familyOf(afFamily: number): Family {
  return afFamily === 10 ? 6 : 4;
}

export function parseMac(value: string, ctx: ErrorContext): Buffer {
  if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(value)) {
    throw invalidArgument(ctx, `"${value}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
  }
  return Buffer.from(value.split(':').map((h) => parseInt(h, 16)));
}

export function formatMac(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
