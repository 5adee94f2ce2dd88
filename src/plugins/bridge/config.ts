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
  vlan: number;
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
  const vlan = int(conf, 'vlan', 0, 4094);
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
  if (cfg.vlan !== 0) throw invalidConfig(`"vlan" ${cfg.vlan}: VLANs are not supported by twill's bridge yet`);
  if (cfg.macspoofchk) throw invalidConfig('"macspoofchk" is not supported by twill\'s bridge yet');
  return cfg;
}
