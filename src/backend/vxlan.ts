// VXLAN, as flannel does it: one device per family (flannel.<VNI>, and
// flannel-v6.<VNI> for IPv6) with the node's subnet .0 on it, and per remote
// node a permanent neighbour (its subnet .0 → its VtepMAC), an FDB entry
// (VtepMAC → its public IP) and, last, an onlink route (its subnet via its .0),
// so the kernel never has to ARP. Same wire format as flanneld: VNI 1, UDP 8472
// by default.
import { isExists, isNotFound, type Handle, type KernelEvent, type Link } from '../kernel/index.js';
import { formatAddr, formatCidr, type Cidr } from '../ipam/addr.js';
import type { Lease } from '../subnet/lease.js';
import { TWILL_ROUTE_PROTOCOL, type Backend, type Repair } from './backend.js';
import { connectedNetworks, onLinkIn } from './onlink.js';
import { pipelined } from './pipeline.js';

export interface VxlanOptions {
  /** Which of the lease's families this device carries (default 4). */
  family?: 4 | 6;
  vni: number;
  /** 0 or unset: the kernel's default 8472, as flannel. */
  port: number;
  gbp: boolean;
  learning: boolean;
  /** Route directly (no VXLAN) to peers whose public IP is on the same link. */
  directRouting: boolean;
  /** MTU of the device: the underlay's minus 50 (IPv4 underlay) or 70 (IPv6) unless configured. */
  mtu: number;
  /** Underlay: this node's public IP (of this family) and the device it is on. */
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

/** A lease as seen by one family's device: its subnet, its public IP and its VTEP data of that family. */
interface FamilyView {
  subnet: Cidr;
  publicIp: string;
  data: unknown;
}

function viewOf(lease: Lease, family: 4 | 6): FamilyView | null {
  const subnet = family === 4 ? lease.subnet : lease.ipv6Subnet;
  const publicIp = family === 4 ? lease.attrs.publicIp : lease.attrs.publicIpv6;
  if (!subnet || !publicIp) return null;
  return { subnet, publicIp, data: family === 4 ? lease.attrs.backendData : lease.attrs.backendV6Data };
}

function vxlanData(v: FamilyView): VxlanData {
  const d = v.data as Partial<VxlanData> | null;
  if (!d || typeof d.VtepMAC !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(d.VtepMAC)) {
    throw new VxlanError(`lease ${formatCidr(v.subnet)} has no usable VtepMAC in its backend data: ${JSON.stringify(v.data)}`);
  }
  return { VNI: typeof d.VNI === 'number' ? d.VNI : 1, VtepMAC: d.VtepMAC.toLowerCase() };
}

/** What one peer needs in the kernel: either the three VXLAN entries, or one direct route. */
type PeerPlan =
  | { direct: false; subnet: string; gateway: string; mac: string; publicIp: string }
  | { direct: true; subnet: string; gateway: string };

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly device: string;
  readonly family: 4 | 6;
  private deviceIndex: number | null = null;

  constructor(private readonly h: Handle, private readonly opts: VxlanOptions) {
    this.family = opts.family ?? 4;
    this.device = vxlanDeviceName(opts.vni, this.family);
  }

  get mtu(): number {
    return this.opts.mtu;
  }

  get vni(): number {
    return this.opts.vni;
  }

  get vtepMac(): string {
    return this.opts.vtepMac.toLowerCase();
  }

  /** The device as configured, created or replaced; the node's subnet .0 on it. */
  async ensureDevice(ownSubnet: Cidr): Promise<Link> {
    return (await this.ensure(ownSubnet)).link;
  }

  private async ensure(ownSubnet: Cidr): Promise<{ link: Link; repairs: Repair[] }> {
    const repairs: Repair[] = [];
    const want = { vni: this.opts.vni, port: this.opts.port || 8472, gbp: this.opts.gbp, learning: this.opts.learning, local: this.opts.localIp };
    let dev = await this.h.findLink(this.device);
    if (dev && (dev.kind !== 'vxlan' || dev.vxlan?.vni !== want.vni || dev.vxlan.port !== want.port || dev.vxlan.local !== want.local || dev.vxlan.gbp !== want.gbp || dev.vxlan.learning !== want.learning)) {
      // A device from another configuration cannot be changed in place.
      await this.h.deleteLink(dev);
      repairs.push({ object: 'device', kind: 'wrong', what: `${this.device}: ${dev.kind} ${JSON.stringify(dev.vxlan)} replaced` });
      dev = null;
    }
    if (!dev) {
      try {
        dev = await this.h.addLink({
          kind: 'vxlan', name: this.device, vni: want.vni, port: want.port, local: want.local, device: this.opts.underlayDevice,
          learning: want.learning, gbp: want.gbp, mtu: this.opts.mtu, mac: this.opts.vtepMac,
        });
        if (repairs.length === 0) repairs.push({ object: 'device', kind: 'missing', what: this.device });
      } catch (e) {
        if (!isExists(e)) throw e;
        dev = await this.h.getLink(this.device);
      }
    }
    if (dev.mtu !== this.opts.mtu || dev.mac !== this.opts.vtepMac.toLowerCase()) {
      await this.h.setLink(dev, { mtu: this.opts.mtu, mac: this.opts.vtepMac });
      repairs.push({ object: 'device', kind: 'wrong', what: `${this.device}: mtu ${dev.mtu} mac ${dev.mac}, want ${this.opts.mtu} ${this.opts.vtepMac}` });
    }
    try {
      this.h.writeSysctl(`net/ipv6/conf/${this.device}/accept_ra`, 0);
    } catch {
      // no IPv6 on this node
    }
    const addr = `${dotZero(ownSubnet)}/${this.family === 4 ? 32 : 128}`;
    let present = false;
    for (const a of await this.h.listAddrs({ link: dev, family: this.family })) {
      const have = `${a.address}/${a.prefixLen}`;
      if (have === addr) present = true;
      else if (this.family === 4 || a.scope === 0) {
        // IPv6 link-local addresses are the kernel's; any other address is from an old subnet.
        await this.h.deleteAddr(dev, have);
        repairs.push({ object: 'address', kind: 'stale', what: `${have} on ${this.device}` });
      }
    }
    if (!present) {
      try {
        await this.h.addAddr(dev, addr, this.family === 6 ? { noDad: true } : undefined);
        repairs.push({ object: 'address', kind: 'missing', what: `${addr} on ${this.device}` });
      } catch (e) {
        if (!isExists(e)) throw e;
      }
    }
    if (!dev.up) await this.h.setLinkUp(dev);
    const link = await this.h.getLink(this.device);
    this.deviceIndex = link.ifindex;
    return { link, repairs };
  }

  async setup(own: Lease): Promise<Repair[]> {
    const v = viewOf(own, this.family);
    if (!v) throw new VxlanError(`this node's lease has no IPv${this.family} subnet and public IP for ${this.device}`);
    return (await this.ensure(v.subnet)).repairs;
  }

  private plan(v: FamilyView, underlay: readonly Cidr[] | null): PeerPlan {
    if (underlay && onLinkIn(underlay, v.publicIp)) return { direct: true, subnet: formatCidr(v.subnet), gateway: v.publicIp };
    return { direct: false, subnet: formatCidr(v.subnet), gateway: dotZero(v.subnet), mac: vxlanData(v).VtepMAC, publicIp: v.publicIp };
  }

  /** The underlay's connected networks when DirectRouting may apply, else null. */
  private async underlayNetworks(): Promise<Cidr[] | null> {
    return this.opts.directRouting ? connectedNetworks(this.h, this.opts.underlayDevice, this.family) : null;
  }

  async addPeer(lease: Lease, previous: Lease | null): Promise<void> {
    const v = viewOf(lease, this.family);
    if (!v) return;
    const p = this.plan(v, await this.underlayNetworks());
    if (p.direct) {
      await this.h.replaceRoute({ dst: p.subnet, gateway: p.gateway, device: this.opts.underlayDevice, protocol: TWILL_ROUTE_PROTOCOL });
      return;
    }
    const undo: (() => Promise<void>)[] = [];
    try {
      await this.h.replaceNeigh(this.device, p.gateway, p.mac);
      undo.push(() => this.h.deleteNeigh(this.device, p.gateway));
      await this.h.replaceFdb(this.device, p.mac, p.publicIp);
      undo.push(() => this.h.deleteFdb(this.device, p.mac, p.publicIp));
      // A peer that came back with a new VtepMAC (or public IP) leaves a stale FDB entry.
      const old = previous ? viewOf(previous, this.family) : null;
      if (old) {
        let oldMac: string | null = null;
        try {
          oldMac = vxlanData(old).VtepMAC;
        } catch {
          // the previous lease had no VtepMAC: it left no FDB entry
        }
        if (oldMac && (oldMac !== p.mac || old.publicIp !== p.publicIp)) {
          await this.h.deleteFdb(this.device, oldMac, old.publicIp).catch((e: unknown) => { if (!isNotFound(e)) throw e; });
        }
      }
      // Last: once the route exists, traffic flows, and everything it needs is there.
      await this.h.replaceRoute({ dst: p.subnet, gateway: p.gateway, device: this.device, onlink: true, protocol: TWILL_ROUTE_PROTOCOL });
    } catch (e) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw e;
    }
  }

  async removePeer(lease: Lease): Promise<void> {
    const v = viewOf(lease, this.family);
    if (!v) return;
    const ignoreGone = (e: unknown) => { if (!isNotFound(e)) throw e; };
    await this.h.deleteRoute({ dst: formatCidr(v.subnet), protocol: TWILL_ROUTE_PROTOCOL }).catch(ignoreGone);
    let data: VxlanData;
    try {
      data = vxlanData(v);
    } catch {
      return; // a malformed lease: only a route could have been ours
    }
    await this.h.deleteFdb(this.device, data.VtepMAC, v.publicIp).catch(ignoreGone);
    await this.h.deleteNeigh(this.device, dotZero(v.subnet)).catch(ignoreGone);
  }

  async sync(own: Lease, peers: Lease[]): Promise<Repair[]> {
    const ownView = viewOf(own, this.family);
    if (!ownView) throw new VxlanError(`this node's lease has no IPv${this.family} subnet and public IP for ${this.device}`);
    const { link: dev, repairs } = await this.ensure(ownView.subnet);
    const underlay = await this.underlayNetworks();
    const plans: PeerPlan[] = [];
    for (const lease of peers) {
      const v = viewOf(lease, this.family);
      if (!v) continue;
      try {
        plans.push(this.plan(v, underlay));
      } catch {
        // A lease without a usable VtepMAC was reported when it arrived; nothing to program.
      }
    }
    const [neighs, fdb, routes] = await Promise.all([
      this.h.listNeighs({ link: dev, family: this.family }),
      this.h.listFdb({ link: dev }),
      this.h.listRoutes({ family: this.family, protocol: TWILL_ROUTE_PROTOCOL }),
    ]);
    const underlayIndex = this.opts.directRouting ? (await this.h.getLink(this.opts.underlayDevice)).ifindex : null;
    const neighByIp = new Map(neighs.filter((n) => n.permanent).map((n) => [n.ip, n]));
    const fdbKey = (mac: string, dst: string | null) => `${mac}|${dst}`;
    const fdbHave = new Set(fdb.filter((f) => f.permanent || f.self).map((f) => fdbKey(f.mac, f.dst)));
    const routeByDst = new Map(routes.filter((r) => r.table === 254).map((r) => [r.dst, r]));
    const wantNeigh = new Set<string>();
    const wantFdb = new Set<string>();
    const wantRoute = new Set<string>();

    // Three phases, in flannel's order for every peer at once: all neighbours, then all FDB
    // entries, then the routes that make traffic flow. Within a phase the requests are
    // pipelined on the netlink socket (a cold start with thousands of peers).
    const neighOps: (() => Promise<void>)[] = [];
    const fdbOps: (() => Promise<void>)[] = [];
    const routeOps: (() => Promise<void>)[] = [];
    for (const p of plans) {
      wantRoute.add(p.subnet);
      const have = routeByDst.get(p.subnet);
      if (p.direct) {
        if (!have || have.gateway !== p.gateway || have.ifindex !== underlayIndex) {
          routeOps.push(() => this.h.replaceRoute({ dst: p.subnet, gateway: p.gateway, device: this.opts.underlayDevice, protocol: TWILL_ROUTE_PROTOCOL }));
          repairs.push({ object: 'route', kind: have ? 'wrong' : 'missing', what: `${p.subnet} via ${p.gateway} dev ${this.opts.underlayDevice}` });
        }
        continue;
      }
      wantNeigh.add(p.gateway);
      wantFdb.add(fdbKey(p.mac, p.publicIp));
      const n = neighByIp.get(p.gateway);
      if (!n || n.mac !== p.mac) {
        neighOps.push(() => this.h.replaceNeigh(dev, p.gateway, p.mac));
        repairs.push({ object: 'neighbour', kind: n ? 'wrong' : 'missing', what: `${p.gateway} lladdr ${p.mac} dev ${this.device}` });
      }
      if (!fdbHave.has(fdbKey(p.mac, p.publicIp))) {
        fdbOps.push(() => this.h.replaceFdb(dev, p.mac, p.publicIp));
        repairs.push({ object: 'fdb', kind: 'missing', what: `${p.mac} dst ${p.publicIp} dev ${this.device}` });
      }
      if (!have || have.gateway !== p.gateway || have.ifindex !== dev.ifindex || !have.onlink) {
        routeOps.push(() => this.h.replaceRoute({ dst: p.subnet, gateway: p.gateway, device: dev, onlink: true, protocol: TWILL_ROUTE_PROTOCOL }));
        repairs.push({ object: 'route', kind: have ? 'wrong' : 'missing', what: `${p.subnet} via ${p.gateway} dev ${this.device} onlink` });
      }
    }
    await pipelined(neighOps);
    await pipelined(fdbOps);
    await pipelined(routeOps);

    const ignoreGone = (e: unknown) => { if (!isNotFound(e)) throw e; };
    for (const r of routeByDst.values()) {
      if (wantRoute.has(r.dst)) continue;
      await this.h.deleteRoute({ dst: r.dst, protocol: TWILL_ROUTE_PROTOCOL }).catch(ignoreGone);
      repairs.push({ object: 'route', kind: 'stale', what: `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} (protocol ${TWILL_ROUTE_PROTOCOL})` });
    }
    for (const f of fdb) {
      if (!(f.permanent || f.self) || wantFdb.has(fdbKey(f.mac, f.dst))) continue;
      await this.h.deleteFdb(dev, f.mac, f.dst ?? undefined).catch(ignoreGone);
      repairs.push({ object: 'fdb', kind: 'stale', what: `${f.mac}${f.dst ? ` dst ${f.dst}` : ''} dev ${this.device}` });
    }
    for (const n of neighByIp.values()) {
      if (wantNeigh.has(n.ip)) continue;
      await this.h.deleteNeigh(dev, n.ip).catch(ignoreGone);
      repairs.push({ object: 'neighbour', kind: 'stale', what: `${n.ip} lladdr ${n.mac} dev ${this.device}` });
    }
    return repairs;
  }

  problemWith(lease: Lease): string | null {
    const v = viewOf(lease, this.family);
    if (!v) return null;
    try {
      vxlanData(v);
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  }

  concerns(ev: KernelEvent): boolean {
    switch (ev.kind) {
      case 'link':
        return ev.link.name === this.device && (ev.type === 'del' || ev.link.ifindex !== this.deviceIndex || !ev.link.up || ev.link.mac !== this.opts.vtepMac.toLowerCase() || ev.link.mtu !== this.opts.mtu);
      case 'addr':
        return ev.type === 'del' && ev.addr.ifindex === this.deviceIndex;
      case 'route':
        return ev.type === 'del' && ev.route.protocol === TWILL_ROUTE_PROTOCOL && ev.route.family === this.family;
      case 'neigh':
        return ev.type === 'del' && ev.neigh.ifindex === this.deviceIndex && ev.neigh.family === this.family;
      case 'fdb':
        return ev.type === 'del' && ev.fdb.ifindex === this.deviceIndex;
    }
  }
}
