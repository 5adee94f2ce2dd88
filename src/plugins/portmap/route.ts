// getRoutableHostIF's lookup over /proc/net/route: the main table, IPv4, with
// interface names. Read as text rather than through netlink so that portmap's
// iptables path never loads the netlink addon (a few ms of every ADD).

const RTF_UP = 0x1;
// Blackhole, unreachable, prohibit and throw routes: they lead to no interface ("*").
const RTF_REJECT = 0x200;

/** A netmask's zero bits, counted from the right (32 for 0.0.0.0). */
const countTrailingZeros = (mask: number): number => (mask === 0 ? 32 : 31 - Math.clz32(mask & -mask));

/**
 * The interface of the longest matching prefix for `ip` (an IPv4 address as an
 * unsigned 32-bit number), lowest metric first, as the kernel's lookup answers;
 * null when no route with an interface matches. The table prints each __be32 as
 * the host reads it (`littleEndian`: byte-swapped) and the metric as a signed int.
 */
export function routeInterface(procNetRoute: string, ip: number, littleEndian: boolean): string | null {
  const word = (hex: string): number => {
    const v = parseInt(hex, 16) >>> 0;
    return littleEndian ? ((((v & 0xff) << 24) | (((v >>> 8) & 0xff) << 16) | (((v >>> 16) & 0xff) << 8) | (v >>> 24)) >>> 0) : v;
  };
  let best: { prefix: number; metric: number; iface: string } | null = null;
  for (const line of procNetRoute.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] === '*') continue;
    const flags = parseInt(f[3]!, 16);
    if ((flags & RTF_UP) === 0 || (flags & RTF_REJECT) !== 0) continue;
    const dst = word(f[1]!);
    const mask = word(f[7]!);
    if (((ip & mask) >>> 0) !== dst) continue;
    const prefix = 32 - countTrailingZeros(mask);
    const metric = Number(f[6]) >>> 0;
    if (!best || prefix > best.prefix || (prefix === best.prefix && metric < best.metric)) best = { prefix, metric, iface: f[0]! };
  }
  return best?.iface ?? null;
}
