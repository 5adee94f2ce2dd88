// The bridge plugin's configuration: the reference plugin's keys and defaults.
import { invalidConfig } from '../../cni/errors.js';
import { checkKnownArgs } from '../../cni/args.js';
import type { NetConf } from '../../cni/types.js';

export interface BridgeConfig {
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  ipMasq: boolean;
  ipMasqBackend: string | undefined;
  mtu: number;
  hairpinMode: boolean;
  promiscMode: boolean;
  /** The port's VLAN: PVID and untagged on the host veth (0: none). */
  vlan: number;
  /** Tagged VLANs of the port, sorted, each once (collectVlanTrunk); empty: none. */
  vlanTrunk: number[];
  /** Keep the port's default VLAN (1) when vlan/vlanTrunk set others. */
  preserveDefaultVlan: boolean;
  /** Create the bridge with vlan_filtering: `vlan` ≠ 0 or `vlanTrunk` present (even empty), as the reference. */
  vlanFiltering: boolean;
  macspoofchk: boolean;
  enabledad: boolean;
  disableContainerInterface: boolean;
  portIsolation: boolean;
  /** The container interface's MAC, from CNI_ARGS MAC, args.cni.mac or runtimeConfig.mac. */
  mac: string | undefined;
  /** The IPAM plugin type; undefined for a layer-2-only attachment. */
  ipamType: string | undefined;
}

export const DEFAULT_BRIDGE = 'cni0';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function bool(conf: NetConf, key: string): boolean {
  const v = conf[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw invalidConfig(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * vlanTrunk as the reference's collectVlanTrunk reads it (its messages too): each item
 * is {minID, maxID} (both or neither), {id}, or both; VIDs 1..4094; the result sorted,
 * each VID once.
 */
function vlanTrunk(conf: NetConf): number[] {
  const v = conf.vlanTrunk;
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalidConfig(`"vlanTrunk" must be a list of {"minID", "maxID"} or {"id"}, got ${JSON.stringify(v)}`);
  const vids = new Set<number>();
  const id = (item: Json, key: string): number | undefined => {
    const x = item[key];
    if (x === undefined || x === null) return undefined;
    if (typeof x !== 'number' || !Number.isInteger(x)) throw invalidConfig(`"vlanTrunk" ${key} must be an integer, got ${JSON.stringify(x)}`);
    return x;
  };
  const inRange = (x: number) => x > 0 && x <= 4094;
  for (const item of v as unknown[]) {
    // The reference crashes on null (a nil pointer); twill says what is wrong.
    if (!isObject(item)) throw invalidConfig(`"vlanTrunk" items must be objects like {"minID": 100, "maxID": 200} or {"id": 100}, got ${JSON.stringify(item)}`);
    const minID = id(item, 'minID');
    const maxID = id(item, 'maxID');
    if (minID !== undefined && maxID !== undefined) {
      if (!inRange(minID)) throw invalidConfig('incorrect trunk minID parameter');
      if (!inRange(maxID)) throw invalidConfig('incorrect trunk maxID parameter');
      if (maxID < minID) throw invalidConfig('minID is greater than maxID in trunk parameter');
      for (let x = minID; x <= maxID; x++) vids.add(x);
    } else if (maxID !== undefined) {
      throw invalidConfig('minID and maxID should be configured simultaneously, minID is missing');
    } else if (minID !== undefined) {
      throw invalidConfig('minID and maxID should be configured simultaneously, maxID is missing');
    }
    const single = id(item, 'id');
    if (single !== undefined) {
      if (!inRange(single)) throw invalidConfig('incorrect trunk id parameter');
      vids.add(single);
    }
  }
  return [...vids].sort((a, b) => a - b);
}

function int(conf: NetConf, key: string, min: number, max: number): number {
  const v = conf[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidConfig(`"${key}" must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

const MAC = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;

export function loadBridgeConfig(conf: NetConf, cniArgs: Map<string, string>): BridgeConfig {
  checkKnownArgs(cniArgs, ['MAC']);
  const bridge = conf.bridge === undefined || conf.bridge === '' ? DEFAULT_BRIDGE : conf.bridge;
  if (typeof bridge !== 'string' || bridge.length > 15 || /[/:\s]/.test(bridge) || bridge === '.' || bridge === '..') {
    throw invalidConfig(`"bridge" ${JSON.stringify(bridge)} is not a valid interface name (1 to 15 characters, no "/", ":" or spaces)`);
  }
  const vlan = conf.vlan === undefined || conf.vlan === null ? 0 : conf.vlan;
  if (typeof vlan !== 'number' || !Number.isInteger(vlan)) throw invalidConfig(`"vlan" must be an integer from 0 to 4094, got ${JSON.stringify(vlan)}`);
  // The reference's message.
  if (vlan < 0 || vlan > 4094) throw invalidConfig(`invalid VLAN ID ${vlan} (must be between 0 and 4094)`);
  const trunk = vlanTrunk(conf);
  const mtu = conf.mtu === 0 ? 0 : int(conf, 'mtu', 68, 65535);
  let mac = cniArgs.get('MAC') || undefined;
  if (isObject(conf.args) && isObject(conf.args.cni) && typeof conf.args.cni.mac === 'string' && conf.args.cni.mac) mac = conf.args.cni.mac;
  if (isObject(conf.runtimeConfig) && typeof conf.runtimeConfig.mac === 'string' && conf.runtimeConfig.mac) mac = conf.runtimeConfig.mac;
  if (mac !== undefined && !MAC.test(mac)) throw invalidConfig(`MAC address ${JSON.stringify(mac)} is not valid (expected aa:bb:cc:dd:ee:ff)`);
  const ipMasqBackend = conf.ipMasqBackend;
  if (ipMasqBackend !== undefined && typeof ipMasqBackend !== 'string') throw invalidConfig(`"ipMasqBackend" must be "iptables" or "nftables", got ${JSON.stringify(ipMasqBackend)}`);
  const ipamType = isObject(conf.ipam) && typeof conf.ipam.type === 'string' && conf.ipam.type !== '' ? conf.ipam.type : undefined;
  const cfg: BridgeConfig = {
    bridge,
    isGateway: bool(conf, 'isGateway'),
    isDefaultGateway: bool(conf, 'isDefaultGateway'),
    forceAddress: bool(conf, 'forceAddress'),
    ipMasq: bool(conf, 'ipMasq'),
    ipMasqBackend,
    mtu,
    hairpinMode: bool(conf, 'hairpinMode'),
    promiscMode: bool(conf, 'promiscMode'),
    vlan,
    vlanTrunk: trunk,
    preserveDefaultVlan: bool(conf, 'preserveDefaultVlan'),
    vlanFiltering: vlan !== 0 || Array.isArray(conf.vlanTrunk),
    macspoofchk: bool(conf, 'macspoofchk'),
    enabledad: bool(conf, 'enabledad'),
    disableContainerInterface: bool(conf, 'disableContainerInterface'),
    portIsolation: bool(conf, 'portIsolation'),
    mac,
    ipamType,
  };
  // A default gateway is a gateway.
  if (cfg.isDefaultGateway) cfg.isGateway = true;
  if (cfg.hairpinMode && cfg.promiscMode) throw invalidConfig('cannot set hairpin mode and promiscuous mode at the same time');
  if (cfg.ipamType && cfg.disableContainerInterface) throw invalidConfig('cannot use IPAM when disableContainerInterface is set');
  return cfg;
}
