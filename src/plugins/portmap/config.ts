// The portmap plugin's configuration: the reference plugin's keys and defaults
// (plugins/meta/portmap/main.go, v1.10.0), checked before anything changes, with
// errors that name the bad value (code 7; the reference reports most as 999, or
// not at all until iptables refuses a half-written rule set).
import { invalidConfig } from '../../cni/errors.js';
import type { NetConf } from '../../cni/types.js';
import { formatAddr, parseAddr } from '../../ipam/addr.js';
import { FIREWALL_BACKENDS, PORT_PROTOCOLS, type FirewallBackendName, type PortMapping, type PortProtocol } from '../../firewall/types.js';

/** Kubernetes uses mark bits 14 and 15, Calico 20 to 31. */
export const DEFAULT_MARK_MASQ_BIT = 13;

export interface PortmapConfig {
  /** runtimeConfig.portMappings (the `portMappings` capability). */
  mappings: PortMapping[];
  snat: boolean;
  markMasqBit: number;
  externalSetMarkChain: string | null;
  conditionsV4: string[];
  conditionsV6: string[];
  /** As configured; undefined: iptables, unless only nftables works here (decided when needed). */
  backend: FirewallBackendName | undefined;
  masqAll: boolean;
  /** Options that only one backend understands, by backend (for the reference's "wrong backend" error). */
  backendOptions: Record<FirewallBackendName, string[]>;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const present = (v: unknown) => v !== undefined && v !== null;

function bool(conf: NetConf, key: string, dflt: boolean): boolean {
  const v = conf[key];
  if (!present(v)) return dflt;
  if (typeof v !== 'boolean') throw invalidConfig(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function port(v: unknown, where: string): number {
  if (v === undefined || v === null) throw invalidConfig(`${where} is missing: expected a port number (an integer from 1 to 65535)`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw invalidConfig(`${where} ${JSON.stringify(v)} is not a port number (an integer from 1 to 65535)`);
  }
  return v;
}

function mapping(v: unknown, i: number): PortMapping {
  const where = `runtimeConfig.portMappings[${i}]`;
  if (!isObject(v)) throw invalidConfig(`${where} must be an object {hostPort, containerPort, protocol, hostIP}, got ${JSON.stringify(v)}`);
  const hostPort = port(v.hostPort, `${where}.hostPort`);
  const containerPort = port(v.containerPort, `${where}.containerPort`);
  // Runtimes send lower case (containerd and CRI-O lower Kubernetes' "TCP"); upper case is accepted the same.
  const proto = typeof v.protocol === 'string' ? v.protocol.toLowerCase() : v.protocol;
  if (typeof proto !== 'string' || !(PORT_PROTOCOLS as readonly string[]).includes(proto)) {
    throw invalidConfig(`${where}.protocol ${JSON.stringify(v.protocol) ?? '(missing)'} is not one of ${PORT_PROTOCOLS.map((p) => `"${p}"`).join(', ')}`);
  }
  let hostIP = '';
  if (present(v.hostIP) && v.hostIP !== '') {
    const ip = typeof v.hostIP === 'string' ? parseAddr(v.hostIP) : null;
    if (!ip) throw invalidConfig(`${where}.hostIP ${JSON.stringify(v.hostIP)} is not an IP address`);
    hostIP = formatAddr(ip);
  }
  return { hostPort, containerPort, protocol: proto as PortProtocol, hostIP };
}

function conditions(conf: NetConf, key: string): string[] {
  const v = conf[key];
  if (!present(v)) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw invalidConfig(`"${key}" must be a list of strings, got ${JSON.stringify(v)}`);
  if (v.some((x) => /[\n\r\0]/.test(x))) throw invalidConfig(`"${key}" cannot contain line breaks or NUL: ${JSON.stringify(v)}`);
  return v;
}

/**
 * detectBackendOfConditions: iptables arguments start with "-" or "!", nft
 * expressions never do; an empty list (or an empty first string) says nothing.
 */
function conditionsBackend(list: string[]): FirewallBackendName | null {
  if (list.length === 0 || list[0] === '') return null;
  return list[0].startsWith('-') || list[0].startsWith('!') ? 'iptables' : 'nftables';
}

/** runtimeConfig.portMappings as given; [] when absent. */
export function rawMappings(conf: NetConf): unknown[] {
  const rc = conf.runtimeConfig;
  if (!present(rc)) return [];
  if (!isObject(rc)) throw invalidConfig(`"runtimeConfig" must be an object, got ${JSON.stringify(rc)}`);
  const list = rc.portMappings;
  if (!present(list)) return [];
  if (!Array.isArray(list)) throw invalidConfig(`runtimeConfig.portMappings must be a list, got ${JSON.stringify(list)}`);
  return list;
}

export function loadPortmapConfig(conf: NetConf): PortmapConfig {
  const mappings = rawMappings(conf).map(mapping);
  const snat = bool(conf, 'snat', true);
  const masqAll = bool(conf, 'masqAll', false);

  const external = conf.externalSetMarkChain;
  if (present(conf.markMasqBit) && present(external)) throw invalidConfig('cannot specify both "externalSetMarkChain" and "markMasqBit"');
  let markMasqBit = DEFAULT_MARK_MASQ_BIT;
  if (present(conf.markMasqBit)) {
    const v = conf.markMasqBit;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 31) throw invalidConfig(`"markMasqBit" must be an integer from 0 to 31, got ${JSON.stringify(v)}`);
    markMasqBit = v;
  }
  let externalSetMarkChain: string | null = null;
  if (present(external)) {
    // iptables chain names: at most 28 characters.
    if (typeof external !== 'string' || !/^[^\s!"'\\-][^\s"'\\]{0,27}$/.test(external)) {
      throw invalidConfig(`"externalSetMarkChain" ${JSON.stringify(external)} is not an iptables chain name (1 to 28 characters, no spaces or quotes)`);
    }
    externalSetMarkChain = external;
  }

  const conditionsV4 = conditions(conf, 'conditionsV4');
  const conditionsV6 = conditions(conf, 'conditionsV6');
  let backend: FirewallBackendName | undefined;
  if (present(conf.backend)) {
    if (typeof conf.backend !== 'string' || !(FIREWALL_BACKENDS as readonly string[]).includes(conf.backend)) {
      throw invalidConfig(`unrecognized backend ${JSON.stringify(conf.backend)}: "backend" must be "iptables" or "nftables" (or left out: iptables, or nftables where iptables does not work)`);
    }
    backend = conf.backend as FirewallBackendName;
  }
  const backendOptions: Record<FirewallBackendName, string[]> = { iptables: [], nftables: [] };
  if (externalSetMarkChain !== null) backendOptions.iptables.push('externalSetMarkChain');
  for (const [key, list] of [['conditionsV4', conditionsV4], ['conditionsV6', conditionsV6]] as const) {
    const b = conditionsBackend(list);
    if (b) backendOptions[b].push(key);
  }
  const cfg: PortmapConfig = { mappings, snat, markMasqBit, externalSetMarkChain, conditionsV4, conditionsV6, backend, masqAll, backendOptions };
  if (backend) checkBackendOptions(cfg, backend);
  return cfg;
}

/** The reference's ensureBackend: options of the other backend are an error. */
export function checkBackendOptions(cfg: PortmapConfig, backend: FirewallBackendName): void {
  const wrong: FirewallBackendName = backend === 'iptables' ? 'nftables' : 'iptables';
  if (cfg.backendOptions[wrong].length > 0) {
    throw invalidConfig(`${backend} backend was requested but configuration contains ${wrong}-specific options [${cfg.backendOptions[wrong].join(' ')}]`);
  }
}
