// host-gw: no overlay, a route per remote subnet via that node's public IP.
// Works only when every node shares one L2 network; a peer behind a router is
// refused with the reason, never routed somewhere wrong.
import { isNotFound, type Handle } from '../kernel/index.js';
import { formatCidr } from '../ipam/addr.js';
import type { Lease } from '../subnet/lease.js';
import { TWILL_ROUTE_PROTOCOL, type Backend } from './backend.js';
import { isOnLink } from './onlink.js';

export class HostGwError extends Error {}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw';

  constructor(private readonly h: Handle, private readonly underlayDevice: string) {}

  async addPeer(lease: Lease): Promise<void> {
    for (const [subnet, via] of [[lease.subnet, lease.attrs.publicIp], [lease.ipv6Subnet, lease.attrs.publicIpv6]] as const) {
      if (!subnet || !via) continue;
      if (!(await isOnLink(this.h, this.underlayDevice, via))) {
        throw new HostGwError(
          `host-gw cannot reach ${formatCidr(subnet)}: its node ${via} is not on-link via ${this.underlayDevice} ` +
            '(host-gw needs all nodes on one L2 network; use the vxlan backend, or vxlan with DirectRouting, across routers)',
        );
      }
      await this.h.replaceRoute({ dst: formatCidr(subnet), gateway: via, device: this.underlayDevice, protocol: TWILL_ROUTE_PROTOCOL });
    }
  }

  async removePeer(lease: Lease): Promise<void> {
    for (const subnet of [lease.subnet, lease.ipv6Subnet]) {
      if (!subnet) continue;
      await this.h.deleteRoute({ dst: formatCidr(subnet), protocol: TWILL_ROUTE_PROTOCOL }).catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
    }
  }
}
