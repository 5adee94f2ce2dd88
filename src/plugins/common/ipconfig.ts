// Putting an IPAM result onto the container's interface: addresses, up, routes
// (a route without "gw" goes via the gateway of its family), as the reference's
// ipam.ConfigureIface does.
import type { Handle } from '../../kernel/index.js';
import { CniError, ErrorCode } from '../../cni/errors.js';
import { isIpv4Cidr } from '../../cni/result.js';
import type { CniResult } from '../../cni/types.js';

export async function configureInterface(h: Handle, ifname: string, ifIndexInResult: number, result: CniResult): Promise<void> {
  const mine = (result.ips ?? []).filter((ip) => ip.interface === ifIndexInResult);
  for (const ip of mine) await h.addAddr(ifname, ip.address, { noDad: false });
  await h.setLinkUp(ifname);
  const gw4 = mine.find((ip) => isIpv4Cidr(ip.address) && ip.gateway)?.gateway;
  const gw6 = mine.find((ip) => !isIpv4Cidr(ip.address) && ip.gateway)?.gateway;
  for (const route of result.routes ?? []) {
    const gateway = route.gw ?? (isIpv4Cidr(route.dst) ? gw4 : gw6);
    const dst = route.dst === '0.0.0.0/0' ? 'default' : route.dst === '::/0' ? 'default6' : route.dst;
    try {
      await h.addRoute({ dst, device: ifname, ...(gateway ? { gateway } : {}), ...(route.priority !== undefined ? { metric: route.priority } : {}) });
    } catch (e) {
      throw new CniError(ErrorCode.Internal, `failed to add route ${route.dst}${gateway ? ` via ${gateway}` : ''} dev ${ifname}: ${(e as Error).message}`);
    }
  }
}
