import { EventEmitter } from 'node:events';
import * as C from './nl/constants.js';
import { RouteSocket, type Message } from './nl/socket.js';
import type { Netns } from './netns.js';
import type { Link } from './link.js';
import type { Addr } from './addr.js';
import type { Route } from './route.js';
import type { FdbEntry, Neigh } from './neigh.js';
import { parseLink } from './link_linux.js';
import { parseAddr } from './addr_linux.js';
import { parseRoute } from './route_linux.js';
import { parseFdb, parseNeigh } from './neigh_linux.js';

export type WatchTopic = 'link' | 'addr' | 'route' | 'neigh';
export type ChangeType = 'new' | 'del';

export type KernelEvent =
  | { type: ChangeType; kind: 'link'; link: Link }
  | { type: ChangeType; kind: 'addr'; addr: Addr }
  | { type: ChangeType; kind: 'route'; route: Route }
  | { type: ChangeType; kind: 'neigh'; neigh: Neigh }
  | { type: ChangeType; kind: 'fdb'; fdb: FdbEntry };

const GROUPS: Record<WatchTopic, number[]> = {
  link: [C.RTNLGRP_LINK],
  addr: [C.RTNLGRP_IPV4_IFADDR, C.RTNLGRP_IPV6_IFADDR],
  route: [C.RTNLGRP_IPV4_ROUTE, C.RTNLGRP_IPV6_ROUTE],
  neigh: [C.RTNLGRP_NEIGH],
};

export function decodeEvent(msg: Message, nsKey: string): KernelEvent | null {
  switch (msg.type) {
    case C.RTM_NEWLINK:
    case C.RTM_DELLINK:
      return { type: msg.type === C.RTM_NEWLINK ? 'new' : 'del', kind: 'link', link: parseLink(msg, nsKey) };
    case C.RTM_NEWADDR:
    case C.RTM_DELADDR:
      return { type: msg.type === C.RTM_NEWADDR ? 'new' : 'del', kind: 'addr', addr: parseAddr(msg, nsKey) };
    case C.RTM_NEWROUTE:
    case C.RTM_DELROUTE:
      return { type: msg.type === C.RTM_NEWROUTE ? 'new' : 'del', kind: 'route', route: parseRoute(msg, nsKey) };
    case C.RTM_NEWNEIGH:
    case C.RTM_DELNEIGH: {
      const type = msg.type === C.RTM_NEWNEIGH ? 'new' : 'del';
      const fdb = parseFdb(msg, nsKey);
      if (fdb) return { type, kind: 'fdb', fdb };
      const neigh = parseNeigh(msg, nsKey);
      return neigh ? { type, kind: 'neigh', neigh } : null;
    }
    default:
      return null;
  }
}

interface WatcherEvents {
  event: [KernelEvent];
  /** The socket failed (e.g. ENOBUFS: events were lost); re-list to resynchronise. */
  error: [Error];
}

/** Kernel change notifications of one namespace. Keeps the process alive until closed. */
export class Watcher extends EventEmitter<WatcherEvents> {
  private readonly sock: RouteSocket;

  constructor(netns: Netns | null, nsKey: string, topics: WatchTopic[]) {
    super();
    const open = () => new RouteSocket(netns?.name ?? null, { listen: true });
    this.sock = netns ? netns.run(open) : open();
    this.sock.subscribe(
      topics.flatMap((t) => GROUPS[t]),
      (msg) => {
        const ev = decodeEvent(msg, nsKey);
        if (ev) this.emit('event', ev);
      },
      (err) => this.emit('error', err),
    );
  }

  close(): void {
    this.sock.close();
  }
}
