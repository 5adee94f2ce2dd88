import type { Family } from './ip.js';
import type { LinkRef } from './link.js';

export type RouteScope = 'universe' | 'link' | 'host' | number;

export interface Route {
  nsKey: string;
  family: Family;
  /** Destination as a CIDR ("10.244.2.0/24"); "0.0.0.0/0" or "::/0" for a default route. */
  dst: string;
  gateway: string | null;
  ifindex: number | null;
  onlink: boolean;
  scope: number;
  table: number;
  metric: number | null;
  /** Who installed it (RTPROT_*): twill marks its own routes with its own number. */
  protocol: number;
  /** RTN_* type: 1 unicast, 2 local, ... */
  type: number;
  prefSrc: string | null;
}

export interface RouteSpec {
  /** CIDR, or "default" (IPv4) / "default6". */
  dst: string;
  gateway?: string;
  device?: LinkRef;
  onlink?: boolean;
  scope?: RouteScope;
  table?: number;
  metric?: number;
  protocol?: number;
  prefSrc?: string;
}

export interface RouteFilter {
  family?: Family;
  table?: number;
  protocol?: number;
  device?: LinkRef;
}
