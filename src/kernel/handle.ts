import { closeSync, fstatSync, openSync } from 'node:fs';
import type { NsContext } from './context.js';
import { RouteSocket } from './nl/socket.js';
import { Netns, openNetns } from './netns.js';
import type { BridgePortAttrs, BridgePortVlans, BridgeVlan, BridgeVlanSpec, Link, LinkAttrs, LinkRef, LinkSpec, VethPeer } from './link.js';
import * as link from './link_linux.js';
import * as bridgeVlan from './bridgevlan_linux.js';
import type { BridgeVlanOptions } from './bridgevlan_linux.js';
import type { Addr, AddrOptions } from './addr.js';
import * as addr from './addr_linux.js';
import type { Route, RouteFilter, RouteSpec } from './route.js';
import * as route from './route_linux.js';
import type { FdbEntry, Neigh } from './neigh.js';
import * as neigh from './neigh_linux.js';
import { getNetnsId } from './nsid_linux.js';
import { readSysctl, writeSysctl } from './sysctl.js';
import { Watcher, type WatchTopic } from './watch.js';
import type { Family } from './ip.js';

function currentNsKey(): string {
  const fd = openSync('/proc/thread-self/ns/net', 'r');
  try {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } finally {
    closeSync(fd);
  }
}

/**
 * All kernel operations on one network namespace, through one netlink socket
 * bound to it. Objects it returns carry the namespace's key; links passed back
 * in must come from the same namespace.
 */
export class Handle implements NsContext {
  private constructor(
    readonly sock: RouteSocket,
    readonly nsKey: string,
    readonly netns: Netns | null,
    private readonly ownsNetns: boolean,
  ) {}

  /** A handle on a namespace (a Netns, a name in /run/netns, or a path), or on the current one. */
  static open(target?: Netns | string): Handle {
    if (target === undefined) return new Handle(new RouteSocket(null), currentNsKey(), null, false);
    const netns = typeof target === 'string' ? openNetns(target) : target;
    const sock = netns.run(() => new RouteSocket(netns.name));
    return new Handle(sock, netns.key, netns, typeof target === 'string');
  }

  get netnsName(): string | null {
    return this.netns?.name ?? null;
  }

  close(): void {
    this.sock.close();
    if (this.ownsNetns) this.netns?.close();
  }

  // links
  listLinks(): Promise<Link[]> { return link.listLinks(this); }
  getLink(name: string): Promise<Link> { return link.getLinkByName(this, name); }
  getLinkByIndex(ifindex: number): Promise<Link> { return link.getLinkByIndex(this, ifindex); }
  findLink(name: string): Promise<Link | null> { return link.findLink(this, name); }
  addLink(spec: LinkSpec): Promise<Link> { return link.addLink(this, spec); }
  setLink(ref: LinkRef, attrs: LinkAttrs & { name?: string }): Promise<void> { return link.setLink(this, ref, attrs); }
  setLinkUp(ref: LinkRef): Promise<void> { return link.setLink(this, ref, { up: true }); }
  setLinkDown(ref: LinkRef): Promise<void> { return link.setLink(this, ref, { up: false }); }
  setBridgePort(ref: LinkRef, attrs: BridgePortAttrs): Promise<void> { return link.setBridgePort(this, ref, attrs); }
  /** Every bridge port's (and bridge's own) VLANs, as `bridge vlan show`. */
  listBridgeVlans(): Promise<BridgePortVlans[]> { return bridgeVlan.listBridgeVlans(this); }
  getBridgeVlans(ref: LinkRef): Promise<BridgeVlan[]> { return bridgeVlan.getBridgeVlans(this, ref); }
  addBridgeVlans(ref: LinkRef, vlans: readonly BridgeVlanSpec[], opts?: BridgeVlanOptions): Promise<void> { return bridgeVlan.addBridgeVlans(this, ref, vlans, opts); }
  deleteBridgeVlans(ref: LinkRef, vlans: readonly (number | BridgeVlanSpec)[], opts?: BridgeVlanOptions): Promise<void> { return bridgeVlan.deleteBridgeVlans(this, ref, vlans, opts); }
  moveLink(ref: LinkRef, target: Netns, newName?: string): Promise<void> { return link.moveLink(this, ref, target, newName); }
  deleteLink(ref: LinkRef): Promise<void> { return link.deleteLink(this, ref); }
  vethPeer(l: Link): VethPeer | null { return link.vethPeer(l); }
  netnsId(target: Netns): Promise<number | null> { return getNetnsId(this, target); }

  // addresses
  listAddrs(opts?: { link?: LinkRef; family?: Family }): Promise<Addr[]> { return addr.listAddrs(this, opts); }
  addAddr(l: LinkRef, cidr: string, opts?: AddrOptions): Promise<void> { return addr.addAddr(this, l, cidr, opts); }
  replaceAddr(l: LinkRef, cidr: string, opts?: AddrOptions): Promise<void> { return addr.replaceAddr(this, l, cidr, opts); }
  deleteAddr(l: LinkRef, cidr: string): Promise<void> { return addr.deleteAddr(this, l, cidr); }

  // routes
  listRoutes(filter?: RouteFilter): Promise<Route[]> { return route.listRoutes(this, filter); }
  addRoute(spec: RouteSpec): Promise<void> { return route.addRoute(this, spec); }
  replaceRoute(spec: RouteSpec): Promise<void> { return route.replaceRoute(this, spec); }
  deleteRoute(spec: RouteSpec): Promise<void> { return route.deleteRoute(this, spec); }

  // neighbours and FDB
  listNeighs(opts?: { link?: LinkRef; family?: Family }): Promise<Neigh[]> { return neigh.listNeighs(this, opts); }
  addNeigh(l: LinkRef, ip: string, mac: string): Promise<void> { return neigh.addNeigh(this, l, ip, mac); }
  replaceNeigh(l: LinkRef, ip: string, mac: string): Promise<void> { return neigh.replaceNeigh(this, l, ip, mac); }
  deleteNeigh(l: LinkRef, ip: string): Promise<void> { return neigh.deleteNeigh(this, l, ip); }
  listFdb(opts?: { link?: LinkRef }): Promise<FdbEntry[]> { return neigh.listFdb(this, opts); }
  appendFdb(l: LinkRef, mac: string, dst: string): Promise<void> { return neigh.appendFdb(this, l, mac, dst); }
  replaceFdb(l: LinkRef, mac: string, dst: string): Promise<void> { return neigh.replaceFdb(this, l, mac, dst); }
  deleteFdb(l: LinkRef, mac: string, dst?: string): Promise<void> { return neigh.deleteFdb(this, l, mac, dst); }

  // sysctls (synchronous: see sysctl.ts)
  readSysctl(key: string): string { return readSysctl(this.netns, key); }
  writeSysctl(key: string, value: string | number): void { writeSysctl(this.netns, key, value); }

  // change notifications, on a socket of their own
  watch(topics: WatchTopic[]): Watcher { return new Watcher(this.netns, this.nsKey, topics); }
}
