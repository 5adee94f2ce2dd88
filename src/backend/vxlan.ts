// VXLAN, as flannel does it: one device flannel.<VNI> with the node's subnet
// .0/32 on it, and per remote node a permanent neighbour (its subnet .0 → its
// VtepMAC), an FDB entry (VtepMAC → its public IP) and, last, an onlink route
// (its subnet via its .0), so the kernel never has to ARP. Same wire format as
// flanneld: VNI 1, UDP 8472 by default.
import { isExists, isNotFound, type Handle, type Link } from '../kernel/index.js';
import { formatAddr, formatCidr, type Cidr } from '../ipam/addr.js';
import type { Lease } from '../subnet/lease.js';
import { TWILL_ROUTE_PROTOCOL, type Backend } from './backend.js';
import { isOnLink } from './onlink.js';

export interface VxlanOptions {
  vni: number;
  /** 0 or unset: the kernel's default 8472, as flannel. */
  port: number;
  gbp: boolean;
  learning: boolean;
  /** Route directly (no VXLAN) to peers whose public IP is on the same link. */
  directRouting: boolean;
  /** MTU of the device: the underlay's minus 50 (IPv4 underlay) unless configured. */
  mtu: number;
  /** Underlay: this node's public IP and the device it is on. */
  localIp: string;
  underlayDevice: string;
  /** Chosen before the device exists and kept across restarts (flannel#1795). */
  vtepMac: string;
}

export interface VxlanData {
  VNI: number;
  VtepMAC: string;
}

export class VxlanError extends Error {}

export const vxlanDeviceName = (vni: number, family: 4 | 6 = 4) => (family === 4 ? `flannel.${vni}` : `flannel-v6.${vni}`);

/** The first address of a subnet: the overlay address of that node. */
const dotZero = (c: Cidr) => formatAddr(c.ip);

function vxlanData(lease: Lease): VxlanData {
  const d = lease.attrs.backendData as Partial<VxlanData> | null;
  if (!d || typeof d.VtepMAC !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(d.VtepMAC)) {
    throw new VxlanError(`lease ${lease.subnet ? formatCidr(lease.subnet) : '?'} has no usable BackendData.VtepMAC: ${JSON.stringify(lease.attrs.backendData)}`);
  }
  return { VNI: typeof d.VNI === 'number' ? d.VNI : 1, VtepMAC: d.VtepMAC.toLowerCase() };
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly device: string;

  constructor(private readonly h: Handle, private readonly opts: VxlanOptions) {
    this.device = vxlanDeviceName(opts.vni);
  }

  /** The device as configured, created or replaced; the node's subnet .0/32 on it. */
  async ensureDevice(ownSubnet: Cidr): Promise<Link> {
    const want = { vni: this.opts.vni, port: this.opts.port || 8472, gbp: this.opts.gbp, learning: this.opts.learning, local: this.opts.localIp };
    let dev = await this.h.findLink(this.device);
    if (dev && (dev.kind !== 'vxlan' || dev.vxlan?.vni !== want.vni || dev.vxlan.port !== want.port || dev.vxlan.local !== want.local || dev.vxlan.gbp !== want.gbp || dev.vxlan.learning !== want.learning)) {
      // A device from another configuration cannot be changed in place.
      await this.h.deleteLink(dev);
      dev = null;
    }
    if (!dev) {
      try {
        dev = await this.h.addLink({
          kind: 'vxlan', name: this.device, vni: want.vni, port: want.port, local: want.local, device: this.opts.underlayDevice,
          learning: want.learning, gbp: want.gbp, mtu: this.opts.mtu, mac: this.opts.vtepMac,
        });
      } catch (e) {
        if (!isExists(e)) throw e;
        dev = await this.h.getLink(this.device);
      }
    }
    if (dev.mtu !== this.opts.mtu || dev.mac !== this.opts.vtepMac.toLowerCase()) await this.h.setLink(dev, { mtu: this.opts.mtu, mac: this.opts.vtepMac });
    try {
      this.h.writeSysctl(`net/ipv6/conf/${this.device}/accept_ra`, 0);
    } catch {
      // no IPv6 on this node
    }
    const addr = `${dotZero(ownSubnet)}/32`;
    for (const a of await this.h.listAddrs({ link: dev, family: 4 })) {
      if (`${a.address}/${a.prefixLen}` !== addr) await this.h.deleteAddr(dev, `${a.address}/${a.prefixLen}`);
    }
    try {
      await this.h.addAddr(dev, addr);
    } catch (e) {
      if (!isExists(e)) throw e;
    }
    await this.h.setLinkUp(dev);
    return this.h.getLink(this.device);
  }

  /** Whether a peer is reached directly (DirectRouting and its public IP on-link on the underlay). */
  private async direct(publicIp: string): Promise<boolean> {
    return this.opts.directRouting && isOnLink(this.h, this.opts.underlayDevice, publicIp);
  }

  async addPeer(lease: Lease, previous: Lease | null): Promise<void> {
    if (!lease.subnet || !lease.attrs.publicIp) return;
    const subnet = formatCidr(lease.subnet);
    if (await this.direct(lease.attrs.publicIp)) {
      await this.h.replaceRoute({ dst: subnet, gateway: lease.attrs.publicIp, device: this.opts.underlayDevice, protocol: TWILL_ROUTE_PROTOCOL });
      return;
    }
    const data = vxlanData(lease);
    const gw = dotZero(lease.subnet);
    const undo: (() => Promise<void>)[] = [];
    try {
      await this.h.replaceNeigh(this.device, gw, data.VtepMAC);
      undo.push(() => this.h.deleteNeigh(this.device, gw));
      await this.h.replaceFdb(this.device, data.VtepMAC, lease.attrs.publicIp);
      undo.push(() => this.h.deleteFdb(this.device, data.VtepMAC, lease.attrs.publicIp!));
      // A peer that came back with a new VtepMAC (or public IP) leaves a stale FDB entry.
      if (previous?.attrs.publicIp) {
        const old = vxlanData(previous);
        if (old.VtepMAC !== data.VtepMAC || previous.attrs.publicIp !== lease.attrs.publicIp) {
          await this.h.deleteFdb(this.device, old.VtepMAC, previous.attrs.publicIp).catch((e: unknown) => { if (!isNotFound(e)) throw e; });
        }
      }
      // Last: once the route exists, traffic flows, and everything it needs is there.
      await this.h.replaceRoute({ dst: subnet, gateway: gw, device: this.device, onlink: true, protocol: TWILL_ROUTE_PROTOCOL });
    } catch (e) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw e;
    }
  }

  async removePeer(lease: Lease): Promise<void> {
    if (!lease.subnet) return;
    const ignoreGone = (e: unknown) => { if (!isNotFound(e)) throw e; };
    await this.h.deleteRoute({ dst: formatCidr(lease.subnet), protocol: TWILL_ROUTE_PROTOCOL }).catch(ignoreGone);
    if (!lease.attrs.publicIp) return;
    let data: VxlanData;
    try {
      data = vxlanData(lease);
    } catch {
      return; // a direct-routed or malformed lease: only the route was ours
    }
    await this.h.deleteFdb(this.device, data.VtepMAC, lease.attrs.publicIp).catch(ignoreGone);
    await this.h.deleteNeigh(this.device, dotZero(lease.subnet)).catch(ignoreGone);
  }
}
