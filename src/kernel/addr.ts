import type { Family } from './ip.js';

export interface Addr {
  nsKey: string;
  ifindex: number;
  family: Family;
  /** The interface's address (IFA_LOCAL; IFA_ADDRESS for IPv6 and when no local is set). */
  address: string;
  prefixLen: number;
  /** Point-to-point peer, when it differs from address. */
  peer: string | null;
  broadcast: string | null;
  label: string | null;
  scope: number;
  flags: number;
}

export interface AddrOptions {
  /** IPv6: skip duplicate address detection (as the CNI bridge does with enabledad=false). */
  noDad?: boolean;
  broadcast?: string;
  label?: string;
}
