// flannel#1850: after a node gets a new subnet, cni0 keeps the old gateway
// address and every new pod fails with "cni0 already has an IP address
// different from ...". An address of cni0 inside the cluster network but
// outside this node's subnet can only be such a leftover: it is replaced. Any
// other address is someone else's: reported once, left alone.
import { isExists, isNotFound, type Handle } from '../kernel/index.js';
import { containsAddr, formatAddr, parseAddr, type Cidr } from '../ipam/addr.js';
import type { Repair } from '../backend/backend.js';
import type { NetworkConfig } from '../subnet/config.js';
import type { Lease } from '../subnet/lease.js';

export const POD_BRIDGE = 'cni0';

/** The gateway address the bridge plugin gives cni0: the subnet's first host, with the subnet's prefix. */
export const gatewayOf = (subnet: Cidr): string => `${formatAddr({ family: subnet.ip.family, value: subnet.ip.value + 1n })}/${subnet.prefix}`;

export class BridgeAddressCheck {
  private readonly reported = new Set<string>();

  constructor(
    private readonly h: Handle,
    private readonly config: NetworkConfig,
    private readonly onForeign: (address: string) => void,
  ) {}

  async run(own: Lease): Promise<Repair[]> {
    const bridge = await this.h.findLink(POD_BRIDGE);
    if (!bridge) return []; // no pod yet: the bridge plugin creates it
    const repairs: Repair[] = [];
    for (const [family, net, subnet] of [[4, this.config.ipv4?.network, own.subnet], [6, this.config.ipv6?.network, own.ipv6Subnet]] as const) {
      if (!net || !subnet) continue;
      const addrs = await this.h.listAddrs({ link: bridge, family });
      let stale = false;
      for (const a of addrs) {
        const ip = parseAddr(a.address)!;
        if (family === 6 && a.scope !== 0) continue; // link-local
        if (containsAddr(subnet, ip)) continue;
        const cidr = `${a.address}/${a.prefixLen}`;
        if (containsAddr(net, ip)) {
          await this.h.deleteAddr(bridge, cidr).catch((e: unknown) => { if (!isNotFound(e)) throw e; });
          repairs.push({ object: 'address', kind: 'stale', what: `${cidr} on ${POD_BRIDGE} (an old subnet of this node; flannel#1850)` });
          stale = true;
        } else if (!this.reported.has(cidr)) {
          this.reported.add(cidr);
          this.onForeign(cidr);
        }
      }
      if (stale) {
        const gw = gatewayOf(subnet);
        await this.h.addAddr(bridge, gw, family === 6 ? { noDad: true } : undefined).catch((e: unknown) => { if (!isExists(e)) throw e; });
        repairs.push({ object: 'address', kind: 'missing', what: `${gw} on ${POD_BRIDGE}` });
      }
    }
    return repairs;
  }
}
