import type { Handle } from '../kernel/index.js';
import { containsAddr, parseAddr, parseCidr } from '../ipam/addr.js';

/** Whether ip is on a connected network of `device` (a route without gateway): reachable without a router. */
export async function isOnLink(h: Handle, device: string, ip: string): Promise<boolean> {
  const addr = parseAddr(ip);
  if (!addr) return false;
  const routes = await h.listRoutes({ family: addr.family, device });
  return routes.some((r) => {
    if (r.gateway !== null || r.dst === '0.0.0.0/0' || r.dst === '::/0') return false;
    const net = parseCidr(r.dst);
    return net !== null && containsAddr(net, addr);
  });
}
