// host-gw: no overlay, a route per remote subnet via that node's public IP.
// Works only when every node shares one L2 network; a peer behind a router is
// refused with the reason, never routed somewhere wrong.
import { isNotFound, type Handle, type KernelEvent } from '../kernel/index.js';
import { formatCidr, type Cidr } from '../ipam/addr.js';
import type { Lease } from '../subnet/lease.js';
import { TWILL_ROUTE_PROTOCOL, type Backend, type Repair } from './backend.js';
import { connectedNetworks, onLinkIn } from './onlink.js';
import { pipelined } from './pipeline.js';

export class HostGwError extends Error {}

/** The (subnet, next hop) pairs of a lease, one per family it has. */
function routesOf(lease: Lease): [Cidr, string][] {
  const out: [Cidr, string][] = [];
  if (lease.subnet && lease.attrs.publicIp) out.push([lease.subnet, lease.attrs.publicIp]);
  if (lease.ipv6Subnet && lease.attrs.publicIpv6) out.push([lease.ipv6Subnet, lease.attrs.publicIpv6]);
  return out;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw';

  /** mtu: the underlay device's (no encapsulation). */
  constructor(private readonly h: Handle, private readonly underlayDevice: string, readonly mtu = 1500) {}

  private refuse(subnet: Cidr, via: string): HostGwError {
    return new HostGwError(
      `host-gw cannot reach ${formatCidr(subnet)}: its node ${via} is not on-link via ${this.underlayDevice} ` +
        '(host-gw needs all nodes on one L2 network; use the vxlan backend, or vxlan with DirectRouting, across routers)',
    );
  }

  async setup(): Promise<Repair[]> {
    return [];
  }

  async addPeer(lease: Lease): Promise<void> {
    for (const [subnet, via] of routesOf(lease)) {
      const family = subnet.ip.family;
      if (!onLinkIn(await connectedNetworks(this.h, this.underlayDevice, family), via)) throw this.refuse(subnet, via);
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

  /** Peers that are not on-link are skipped here (addPeer reported them when they arrived). */
  async sync(_own: Lease, peers: Lease[]): Promise<Repair[]> {
    const repairs: Repair[] = [];
    const dev = await this.h.getLink(this.underlayDevice);
    const [net4, net6, routes] = await Promise.all([
      connectedNetworks(this.h, this.underlayDevice, 4),
      connectedNetworks(this.h, this.underlayDevice, 6),
      this.h.listRoutes({ protocol: TWILL_ROUTE_PROTOCOL }),
    ]);
    const have = new Map(routes.filter((r) => r.table === 254).map((r) => [r.dst, r]));
    const want = new Set<string>();
    const ops: (() => Promise<void>)[] = [];
    for (const lease of peers) {
      for (const [subnet, via] of routesOf(lease)) {
        if (!onLinkIn(subnet.ip.family === 4 ? net4 : net6, via)) continue;
        const dst = formatCidr(subnet);
        want.add(dst);
        const r = have.get(dst);
        if (!r || r.gateway !== via || r.ifindex !== dev.ifindex) {
          ops.push(() => this.h.replaceRoute({ dst, gateway: via, device: dev, protocol: TWILL_ROUTE_PROTOCOL }));
          repairs.push({ object: 'route', kind: r ? 'wrong' : 'missing', what: `${dst} via ${via} dev ${this.underlayDevice}` });
        }
      }
    }
    await pipelined(ops);
    for (const r of have.values()) {
      if (want.has(r.dst)) continue;
      await this.h.deleteRoute({ dst: r.dst, protocol: TWILL_ROUTE_PROTOCOL }).catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
      repairs.push({ object: 'route', kind: 'stale', what: `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} (protocol ${TWILL_ROUTE_PROTOCOL})` });
    }
    return repairs;
  }

  concerns(ev: KernelEvent): boolean {
    return ev.kind === 'route' && ev.type === 'del' && ev.route.protocol === TWILL_ROUTE_PROTOCOL;
  }
}
