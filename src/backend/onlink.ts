import type { Handle } from '../kernel/index.js';
import { containsAddr, parseAddr, parseCidr, type Cidr } from '../ipam/addr.js';

/** The networks `device` reaches without a router (its routes without gateway), read once for many peers. */
export async function connectedNetworks(h: Handle, device: string, family: 4 | 6): Promise<Cidr[]> {
  const routes = await h.listRoutes({ family, device });
  return routes
    .filter((r) => r.gateway === null && r.dst !== '0.0.0.0/0' && r.dst !== '::/0')
    .map((r) => parseCidr(r.dst))
    .filter((c): c is Cidr => c !== null);
}

export function onLinkIn(networks: readonly Cidr[], ip: string): boolean {
  const addr = parseAddr(ip);
  return addr !== null && networks.some((n) => containsAddr(n, addr));
}

/** Whether ip is on a connected network of `device`: reachable without a router. */
export async function isOnLink(h: Handle, device: string, ip: string): Promise<boolean> {
  const addr = parseAddr(ip);
  if (!addr) return false;
  return onLinkIn(await connectedNetworks(h, device, addr.family), ip);
}
