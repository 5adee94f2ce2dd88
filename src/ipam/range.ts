// Address ranges and range sets, with host-local's defaults and checks.
import { containsAddr, formatAddr, formatCidr, lastOf, networkOf, parseAddr, parseCidr, type Cidr, type Family, type IpNum } from './addr.js';

/** One range as configured: all strings, all optional but the subnet. */
export interface RangeConfig {
  subnet?: unknown;
  rangeStart?: unknown;
  rangeEnd?: unknown;
  gateway?: unknown;
}

export class Range {
  constructor(
    readonly subnet: Cidr,
    readonly start: IpNum,
    readonly end: IpNum,
    readonly gateway: IpNum | null,
  ) {}

  get family(): Family {
    return this.subnet.ip.family;
  }

  /** Inside the subnet and between start and end. */
  contains(ip: IpNum): boolean {
    return containsAddr(this.subnet, ip) && ip.value >= this.start.value && ip.value <= this.end.value;
  }

  overlaps(other: Range): boolean {
    return this.family === other.family && this.start.value <= other.end.value && other.start.value <= this.end.value;
  }

  /** "10.1.0.1-10.1.0.254", as the reference prints a range. */
  toString(): string {
    return `${formatAddr(this.start)}-${formatAddr(this.end)}`;
  }

  get subnetText(): string {
    return formatCidr(this.subnet);
  }
}

export class RangeConfigError extends Error {}

/**
 * A range with host-local's defaults: gateway = subnet + 1, start = subnet + 1
 * (the gateway is skipped when handing out), end = broadcast − 1 (IPv4) or the
 * last address (IPv6).
 */
export function canonicalizeRange(cfg: RangeConfig): Range {
  if (cfg.subnet === undefined || cfg.subnet === '') throw new RangeConfigError('a range needs a "subnet"');
  const subnet = parseCidr(String(cfg.subnet));
  if (typeof cfg.subnet !== 'string' || !subnet) throw new RangeConfigError(`subnet ${JSON.stringify(cfg.subnet)} is not a CIDR (e.g. 10.244.1.0/24)`);
  const maxPrefix = subnet.ip.family === 4 ? 30 : 126;
  if (subnet.prefix > maxPrefix) throw new RangeConfigError(`network ${formatCidr(subnet)} is too small to allocate from (at most /${maxPrefix})`);
  const network = networkOf(subnet);
  if (network !== subnet.ip.value) {
    throw new RangeConfigError(
      `network ${formatCidr(subnet)} has host bits set: for a prefix of length ${subnet.prefix} the network address is ${formatAddr({ family: subnet.ip.family, value: network })}`,
    );
  }
  const family = subnet.ip.family;
  const addrOf = (key: 'rangeStart' | 'rangeEnd' | 'gateway'): IpNum | null => {
    const v = cfg[key];
    if (v === undefined || v === null || v === '') return null;
    const ip = typeof v === 'string' ? parseAddr(v) : null;
    if (!ip) throw new RangeConfigError(`${key} ${JSON.stringify(v)} is not an IP address`);
    if (ip.family !== family) throw new RangeConfigError(`${key} ${v} is not of the family of subnet ${formatCidr(subnet)}`);
    return ip;
  };
  const first: IpNum = { family, value: network + 1n };
  const start = addrOf('rangeStart') ?? first;
  const end = addrOf('rangeEnd') ?? { family, value: family === 4 ? lastOf(subnet) - 1n : lastOf(subnet) };
  const gateway = addrOf('gateway') ?? first;
  if (!containsAddr(subnet, start)) throw new RangeConfigError(`rangeStart ${formatAddr(start)} not in network ${formatCidr(subnet)}`);
  if (!containsAddr(subnet, end)) throw new RangeConfigError(`rangeEnd ${formatAddr(end)} not in network ${formatCidr(subnet)}`);
  if (start.value > end.value) throw new RangeConfigError(`rangeStart ${formatAddr(start)} is after rangeEnd ${formatAddr(end)}`);
  return new Range({ ip: { family, value: network }, prefix: subnet.prefix }, start, end, gateway);
}

/** Several ranges of one family that a container takes one address from. */
export class RangeSet {
  constructor(readonly ranges: Range[]) {}

  get family(): Family {
    return this.ranges[0]!.family;
  }

  rangeFor(ip: IpNum): Range | undefined {
    return this.ranges.find((r) => r.contains(ip));
  }

  contains(ip: IpNum): boolean {
    return this.rangeFor(ip) !== undefined;
  }

  overlaps(other: RangeSet): boolean {
    return this.ranges.some((a) => other.ranges.some((b) => a.overlaps(b)));
  }

  toString(): string {
    return this.ranges.map((r) => r.toString()).join(',');
  }
}

export function canonicalizeRangeSet(cfgs: unknown): RangeSet {
  if (!Array.isArray(cfgs)) throw new RangeConfigError('a range set must be a list of ranges');
  if (cfgs.length === 0) throw new RangeConfigError('empty range set');
  const ranges = cfgs.map((c: unknown) => {
    if (typeof c !== 'object' || c === null) throw new RangeConfigError('a range must be an object with "subnet"');
    return canonicalizeRange(c as RangeConfig);
  });
  for (const r of ranges) if (r.family !== ranges[0]!.family) throw new RangeConfigError('mixed address families in one range set');
  for (let i = 0; i < ranges.length; i++) {
    for (let j = i + 1; j < ranges.length; j++) {
      if (ranges[i]!.overlaps(ranges[j]!)) throw new RangeConfigError(`subnets ${ranges[i]!.subnetText} and ${ranges[j]!.subnetText} overlap`);
    }
  }
  return new RangeSet(ranges);
}
