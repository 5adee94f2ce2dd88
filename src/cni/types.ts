// The CNI data model in its current (1.1.0) shape. Older versions are converted
// at the edges (result.ts), so plugins only ever see and build this one.

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  /** The netns path, for interfaces inside the container. */
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IpConfig {
  /** Index into interfaces. */
  interface?: number;
  /** CIDR: the address with its network's prefix, e.g. 10.244.1.5/24. */
  address: string;
  gateway?: string;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface Dns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: IpConfig[];
  routes?: CniRoute[];
  dns?: Dns;
}

/** A network configuration as a plugin receives it on stdin (keys it does not know are kept). */
export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  capabilities?: Record<string, boolean>;
  ipam?: { type?: string } & Record<string, unknown>;
  dns?: Dns;
  args?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  prevResult?: unknown;
  [key: string]: unknown;
}

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';

/** What the runtime told the plugin through the environment. */
export interface CmdArgs {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS, parsed (K=V;K=V). */
  args: Map<string, string>;
  /** CNI_ARGS as given, for delegates. */
  argsRaw: string;
  /** CNI_PATH, split. */
  path: string[];
  stdin: Buffer;
  /**
   * Identities (dev:ino) of the twill executable the runtime ran: a delegate
   * found in CNI_PATH that is one of them runs in-process. Default: this process's.
   */
  ownExecutables?: readonly string[];
}
