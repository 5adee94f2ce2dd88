// Which interface carries the overlay, and this node's public IP: flannel's
// rules (--iface by name or IP, --iface-regex, --iface-can-reach, else the
// interface of the default route), read from the namespace the agent runs in.
import type { Addr, Handle, Link, Route } from '../kernel/index.js';
import { containsAddr, parseAddr, parseCidr } from '../ipam/addr.js';

export interface InterfaceChoice {
  ifaces: string[];
  ifaceRegexes: string[];
  ifaceCanReach: string | null;
  publicIp: string | null;
  publicIpv6: string | null;
  /** Which families the cluster uses: the public IP of each is needed. */
  ipv4: boolean;
  ipv6: boolean;
}

export interface ExternalInterface {
  link: Link;
  publicIp: string | null;
  publicIpv6: string | null;
  /** The interface's own addresses (the public IP may be another, e.g. behind NAT). */
  ifaceIp: string | null;
  ifaceIpv6: string | null;
  /** How it was chosen, for the start-up log. */
  how: string;
}

export class InterfaceError extends Error {}

const RT_SCOPE_UNIVERSE = 0;
const globalAddrs = (addrs: Addr[], link: Link, family: 4 | 6) =>
  addrs.filter((a) => a.ifindex === link.ifindex && a.family === family && a.scope === RT_SCOPE_UNIVERSE).map((a) => a.address);

/** The route the kernel would pick for ip in the main table: the longest prefix, then the lowest metric. */
function routeTo(routes: Route[], ip: string): Route | null {
  const addr = parseAddr(ip);
  if (!addr) return null;
  let best: Route | null = null;
  let bestLen = -1;
  for (const r of routes) {
    if (r.table !== 254 || r.family !== addr.family || r.type !== 1 || r.ifindex === null) continue;
    const c = parseCidr(r.dst);
    if (!c || !containsAddr(c, addr)) continue;
    if (c.prefix > bestLen || (c.prefix === bestLen && (r.metric ?? 0) < (best?.metric ?? 0))) {
      best = r;
      bestLen = c.prefix;
    }
  }
  return best;
}

export async function chooseInterface(h: Handle, c: InterfaceChoice): Promise<ExternalInterface> {
  const [links, addrs] = await Promise.all([h.listLinks(), h.listAddrs()]);
  const byIndex = new Map(links.map((l) => [l.ifindex, l]));
  const ownerOf = (ip: string) => {
    const a = addrs.find((x) => x.address === ip);
    return a ? byIndex.get(a.ifindex) ?? null : null;
  };
  let link: Link | null = null;
  let how = '';
  let ipFromChoice: string | null = null;

  if (c.ifaces.length) {
    for (const want of c.ifaces) {
      if (parseAddr(want)) {
        link = ownerOf(want);
        if (link) ipFromChoice = want;
      } else {
        link = links.find((l) => l.name === want) ?? null;
      }
      if (link) {
        how = `--iface ${want}`;
        break;
      }
    }
    if (!link) throw new InterfaceError(`none of --iface ${c.ifaces.join(', ')} is an interface name or an address of this node (interfaces: ${links.map((l) => l.name).join(', ')})`);
  } else if (c.ifaceRegexes.length) {
    for (const source of c.ifaceRegexes) {
      let re: RegExp;
      try {
        re = new RegExp(source);
      } catch (e) {
        throw new InterfaceError(`--iface-regex ${JSON.stringify(source)} is not a regular expression: ${(e as Error).message}`);
      }
      // flannel tries the addresses first, then the names.
      const byAddr = addrs.find((a) => re.test(a.address));
      if (byAddr) {
        link = byIndex.get(byAddr.ifindex) ?? null;
        ipFromChoice = byAddr.address;
      } else {
        link = links.find((l) => re.test(l.name)) ?? null;
      }
      if (link) {
        how = `--iface-regex ${source}`;
        break;
      }
    }
    if (!link) throw new InterfaceError(`no interface name or address matches --iface-regex ${c.ifaceRegexes.join(', ')}`);
  } else if (c.ifaceCanReach) {
    const target = parseAddr(c.ifaceCanReach);
    if (!target) throw new InterfaceError(`--iface-can-reach ${JSON.stringify(c.ifaceCanReach)} is not an IP address`);
    const r = routeTo(await h.listRoutes({ family: target.family }), c.ifaceCanReach);
    if (!r) throw new InterfaceError(`no route to ${c.ifaceCanReach} (--iface-can-reach): this node cannot reach it`);
    link = byIndex.get(r.ifindex!) ?? null;
    ipFromChoice = r.prefSrc;
    how = `--iface-can-reach ${c.ifaceCanReach}`;
  } else {
    const family = c.ipv4 ? 4 : 6;
    const routes = await h.listRoutes({ family });
    const def = routes
      .filter((r) => r.table === 254 && (r.dst === '0.0.0.0/0' || r.dst === '::/0') && r.ifindex !== null)
      .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
    if (!def) {
      throw new InterfaceError(
        `this node has no IPv${family} default route to pick the interface from: name it with --iface NAME|IP, --iface-regex or --iface-can-reach`,
      );
    }
    link = byIndex.get(def.ifindex!) ?? null;
    how = 'the default route';
  }
  if (!link) throw new InterfaceError(`the interface chosen by ${how || 'default'} has vanished`);

  const v4 = globalAddrs(addrs, link, 4);
  const v6 = globalAddrs(addrs, link, 6);
  const ifaceIp = ipFromChoice && parseAddr(ipFromChoice)?.family === 4 ? ipFromChoice : (v4[0] ?? null);
  const ifaceIpv6 = ipFromChoice && parseAddr(ipFromChoice)?.family === 6 ? ipFromChoice : (v6[0] ?? null);
  const publicIp = c.publicIp ?? ifaceIp;
  const publicIpv6 = c.publicIpv6 ?? ifaceIpv6;
  if (c.ipv4 && !publicIp) throw new InterfaceError(`${link.name} (chosen by ${how}) has no global IPv4 address: give --public-ip, or choose another interface`);
  if (c.ipv6 && !publicIpv6) throw new InterfaceError(`${link.name} (chosen by ${how}) has no global IPv6 address: give --public-ipv6, or choose another interface`);
  return { link, publicIp: c.ipv4 ? publicIp : null, publicIpv6: c.ipv6 ? publicIpv6 : null, ifaceIp, ifaceIpv6, how };
}
