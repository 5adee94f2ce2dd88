import type { Family } from './ip.js';

export interface Neigh {
  nsKey: string;
  ifindex: number;
  family: Family;
  ip: string;
  mac: string | null;
  /** NUD_* bits; permanent entries are the ones twill writes. */
  state: number;
  flags: number;
  permanent: boolean;
}

/** A bridge forwarding entry; on a vxlan device, "this MAC is behind that remote VTEP". */
export interface FdbEntry {
  nsKey: string;
  ifindex: number;
  mac: string;
  /** Remote VTEP IP (vxlan), or null. */
  dst: string | null;
  /** Bridge index for entries learned on a bridge port (NDA_MASTER). */
  masterIndex: number | null;
  self: boolean;
  permanent: boolean;
  state: number;
  flags: number;
}
