// The cluster's network config (flannel's net-conf.json): keys in any letter
// case, flannel's defaults and limits, errors that name the key and the value.
import { formatAddr, formatCidr, lastOf, networkOf, parseAddr, parseCidr, type Cidr, type IpNum } from '../ipam/addr.js';

export interface FamilyConfig {
  network: Cidr;
  subnetLen: number;
  /** First and last subnet addresses a node may lease (aligned to subnetLen). */
  subnetMin: IpNum;
  subnetMax: IpNum;
}

export interface BackendConfig {
  type: string;
  /** The backend's own keys (VNI, Port, DirectRouting, ...), with their original case. */
  options: Record<string, unknown>;
}

export interface NetworkConfig {
  ipv4: FamilyConfig | null;
  ipv6: FamilyConfig | null;
  enableNFTables: boolean;
  backend: BackendConfig;
  /** Said to the user at start: e.g. that Backend defaulted to vxlan. */
  notes: string[];
}

export class ConfigError extends Error {}

type Json = Record<string, unknown>;

/** flannel matches keys case-insensitively (Go's encoding/json). */
function lowerKeys(o: Json): Map<string, [string, unknown]> {
  const m = new Map<string, [string, unknown]>();
  for (const [k, v] of Object.entries(o)) m.set(k.toLowerCase(), [k, v]);
  return m;
}

function get(m: Map<string, [string, unknown]>, key: string): unknown {
  return m.get(key.toLowerCase())?.[1];
}

function bool(m: Map<string, [string, unknown]>, key: string, fallback: boolean): boolean {
  const v = get(m, key);
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new ConfigError(`${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function familyConfig(m: Map<string, [string, unknown]>, family: 4 | 6): FamilyConfig {
  const p = family === 4 ? '' : 'IPv6';
  const netKey = family === 4 ? 'Network' : 'IPv6Network';
  const raw = get(m, netKey);
  if (raw === undefined || raw === '') throw new ConfigError(`${netKey} is missing: the cluster's ${family === 4 ? 'IPv4' : 'IPv6'} CIDR, e.g. ${family === 4 ? '"10.244.0.0/16"' : '"fd00:10:244::/56"'}`);
  const network = typeof raw === 'string' ? parseCidr(raw) : null;
  if (!network || network.ip.family !== family) throw new ConfigError(`${netKey} ${JSON.stringify(raw)} is not an IPv${family} CIDR`);
  if (networkOf(network) !== network.ip.value) {
    throw new ConfigError(`${netKey} ${raw} has host bits set: the network is ${formatAddr({ family, value: networkOf(network) })}/${network.prefix}`);
  }
  const bits = family === 4 ? 32 : 128;
  const lenKey = `${p}SubnetLen`;
  const rawLen = get(m, lenKey);
  let subnetLen: number;
  if (rawLen !== undefined && rawLen !== null && rawLen !== 0) {
    if (typeof rawLen !== 'number' || !Number.isInteger(rawLen)) throw new ConfigError(`${lenKey} must be a prefix length, got ${JSON.stringify(rawLen)}`);
    // A node needs room for a tunnel and a bridge address, and the network more than two subnets.
    if (rawLen > bits - 2) throw new ConfigError(`${lenKey} ${rawLen} is longer than ${bits - 2}`);
    if (rawLen < network.prefix + 2) throw new ConfigError(`${lenKey} ${rawLen} leaves ${netKey} ${raw} fewer than four subnets: use /${network.prefix + 2} or longer`);
    subnetLen = rawLen;
  } else if (network.prefix > bits - 4) {
    throw new ConfigError(`${netKey} ${raw} is too small: the smallest useful network is /${bits - 4}`);
  } else {
    // flannel: a /24 per node (/64 for IPv6) when the network holds four of them, else a quarter.
    const perNode = family === 4 ? 24 : 64;
    subnetLen = network.prefix <= perNode - 2 ? perNode : network.prefix + 2;
  }
  const size = 1n << BigInt(bits - subnetLen);
  const align = (ip: IpNum) => (ip.value & ~(size - 1n)) === ip.value;
  const bound = (key: string, fallback: bigint): IpNum => {
    const v = get(m, `${p}${key}`);
    if (v === undefined || v === null || v === '') return { family, value: fallback };
    const ip = typeof v === 'string' ? parseAddr(v) : null;
    if (!ip || ip.family !== family) throw new ConfigError(`${p}${key} ${JSON.stringify(v)} is not an IPv${family} address`);
    const inside = (ip.value & ~((1n << BigInt(bits - network.prefix)) - 1n)) === networkOf(network);
    if (!inside) throw new ConfigError(`${p}${key} ${v} is not in ${netKey} ${raw}`);
    if (!align(ip)) throw new ConfigError(`${p}${key} ${v} is not on a /${subnetLen} boundary (${p}SubnetLen)`);
    return ip;
  };
  // The first subnet is skipped: its .0 would clash with the network's own address.
  const subnetMin = bound('SubnetMin', networkOf(network) + size);
  const subnetMax = bound('SubnetMax', lastOf(network) + 1n - size);
  if (subnetMin.value > subnetMax.value) throw new ConfigError(`${p}SubnetMin ${formatAddr(subnetMin)} is after ${p}SubnetMax ${formatAddr(subnetMax)}`);
  return { network: { ip: { family, value: networkOf(network) }, prefix: network.prefix }, subnetLen, subnetMin, subnetMax };
}

export function parseNetworkConfig(text: string, source = 'net-conf.json'): NetworkConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${source} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${source} must be a JSON object`);
  const m = lowerKeys(raw as Json);
  const notes: string[] = [];
  const enable4 = bool(m, 'EnableIPv4', true);
  const enable6 = bool(m, 'EnableIPv6', false);
  if (!enable4 && !enable6) throw new ConfigError('EnableIPv4 and EnableIPv6 are both false: nothing to do');
  const backendRaw = get(m, 'Backend');
  let backend: BackendConfig;
  if (backendRaw === undefined || backendRaw === null) {
    // flannel's code would fall back to "udp", which its own docs call deprecated.
    backend = { type: 'vxlan', options: {} };
    notes.push('Backend is not set: using vxlan (flannel would fall back to udp)');
  } else if (typeof backendRaw !== 'object' || Array.isArray(backendRaw)) {
    throw new ConfigError(`Backend must be an object such as {"Type": "vxlan"}, got ${JSON.stringify(backendRaw)}`);
  } else {
    const bm = lowerKeys(backendRaw as Json);
    const type = get(bm, 'Type') ?? 'vxlan';
    if (typeof type !== 'string' || type === '') throw new ConfigError(`Backend.Type must be a string such as "vxlan", got ${JSON.stringify(type)}`);
    const options = Object.fromEntries(Object.entries(backendRaw as Json).filter(([k]) => k.toLowerCase() !== 'type'));
    backend = { type: type.toLowerCase(), options };
  }
  return {
    ipv4: enable4 ? familyConfig(m, 4) : null,
    ipv6: enable6 ? familyConfig(m, 6) : null,
    enableNFTables: bool(m, 'EnableNFTables', false),
    backend,
    notes,
  };
}

/** How flannel prints a family's range: "10.244.1.0/24 .. 10.244.255.0/24". */
export function describeFamily(f: FamilyConfig): string {
  return `${formatCidr(f.network)}: /${f.subnetLen} subnets from ${formatAddr(f.subnetMin)} to ${formatAddr(f.subnetMax)}`;
}
