// host-local's configuration, with the reference's rules: ranges (range sets),
// the legacy top-level subnet, runtimeConfig.ipRanges, and requested IPs from
// CNI_ARGS (IP=), args.cni.ips and runtimeConfig.ips.
import { invalidConfig, CniError, ErrorCode } from '../cni/errors.js';
import { checkKnownArgs } from '../cni/args.js';
import { atLeast } from '../cni/version.js';
import type { CniRoute, NetConf } from '../cni/types.js';
import { parseAddr, parseCidr, type IpNum } from './addr.js';
import { canonicalizeRangeSet, RangeConfigError, type RangeSet } from './range.js';
import { DEFAULT_DATA_DIR } from './store.js';

export interface HostLocalConfig {
  /** The network name: the store's directory under dataDir. */
  network: string;
  rangeSets: RangeSet[];
  routes: CniRoute[];
  dataDir: string;
  resolvConf: string | null;
  /** Requested addresses, from every source, in order. */
  requested: IpNum[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** "10.1.2.3" or "10.1.2.3/24": the address part (what the reference's ip.IP accepts). */
function requestedIp(v: unknown, where: string): IpNum {
  const text = typeof v === 'string' ? v.trim() : '';
  const ip = text.includes('/') ? parseCidr(text)?.ip : parseAddr(text);
  if (!ip) throw invalidConfig(`${where}: ${JSON.stringify(v)} is not an IP address`);
  return ip;
}

function parseRoutes(v: unknown): CniRoute[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalidConfig('ipam.routes must be a list of {"dst": CIDR, "gw": IP}');
  return v.map((r: unknown, i) => {
    if (!isObject(r) || typeof r.dst !== 'string' || !parseCidr(r.dst)) {
      throw invalidConfig(`ipam.routes[${i}].dst ${JSON.stringify(isObject(r) ? r.dst : r)} is not a CIDR`);
    }
    const route: CniRoute = { dst: r.dst };
    if (r.gw !== undefined && r.gw !== null && r.gw !== '') {
      if (typeof r.gw !== 'string' || !parseAddr(r.gw)) throw invalidConfig(`ipam.routes[${i}].gw ${JSON.stringify(r.gw)} is not an IP address`);
      route.gw = r.gw;
    }
    return route;
  });
}

export function loadHostLocalConfig(conf: NetConf, cniArgs: Map<string, string>): HostLocalConfig {
  const ipam = conf.ipam;
  if (!isObject(ipam)) throw invalidConfig('IPAM config missing "ipam" key');

  const requested: IpNum[] = [];
  checkKnownArgs(cniArgs, ['IP']);
  const envIp = cniArgs.get('IP');
  if (envIp) for (const item of envIp.split(',')) requested.push(requestedIp(item, 'CNI_ARGS IP'));
  const argIps = isObject(conf.args) && isObject(conf.args.cni) ? conf.args.cni.ips : undefined;
  if (argIps !== undefined) {
    if (!Array.isArray(argIps)) throw invalidConfig('args.cni.ips must be a list of addresses');
    argIps.forEach((v, i) => requested.push(requestedIp(v, `args.cni.ips[${i}]`)));
  }
  const runtime = isObject(conf.runtimeConfig) ? conf.runtimeConfig : {};
  if (runtime.ips !== undefined) {
    if (!Array.isArray(runtime.ips)) throw invalidConfig('runtimeConfig.ips must be a list of addresses');
    runtime.ips.forEach((v, i) => requested.push(requestedIp(v, `runtimeConfig.ips[${i}]`)));
  }

  // Order as the reference: runtime ipRanges, the legacy top-level range, then ranges.
  const sets: unknown[] = [];
  if (runtime.ipRanges !== undefined) {
    if (!Array.isArray(runtime.ipRanges)) throw invalidConfig('runtimeConfig.ipRanges must be a list of range sets');
    sets.push(...runtime.ipRanges);
  }
  if (ipam.subnet !== undefined && ipam.subnet !== '') {
    sets.push([{ subnet: ipam.subnet, rangeStart: ipam.rangeStart, rangeEnd: ipam.rangeEnd, gateway: ipam.gateway }]);
  }
  if (ipam.ranges !== undefined) {
    if (!Array.isArray(ipam.ranges)) throw invalidConfig('ipam.ranges must be a list of range sets (each a list of ranges)');
    sets.push(...ipam.ranges);
  }
  if (sets.length === 0) throw invalidConfig('no IP ranges specified (ipam.ranges or ipam.subnet)');

  const rangeSets = sets.map((s, i) => {
    try {
      return canonicalizeRangeSet(s);
    } catch (e) {
      if (e instanceof RangeConfigError) throw invalidConfig(`invalid range set ${i}: ${e.message}`);
      throw e;
    }
  });
  const perFamily = { 4: 0, 6: 0 };
  for (const s of rangeSets) perFamily[s.family]++;
  if ((perFamily[4] > 1 || perFamily[6] > 1) && !atLeast(conf.cniVersion, '0.3.0')) {
    throw new CniError(ErrorCode.IncompatibleVersion, `CNI version ${conf.cniVersion} does not support more than 1 address per family`);
  }
  for (let i = 0; i < rangeSets.length; i++) {
    for (let j = i + 1; j < rangeSets.length; j++) {
      if (rangeSets[i]!.overlaps(rangeSets[j]!)) throw invalidConfig(`range set ${i} overlaps with ${j}`);
    }
  }

  const dataDir = ipam.dataDir === undefined || ipam.dataDir === '' ? DEFAULT_DATA_DIR : ipam.dataDir;
  if (typeof dataDir !== 'string' || !dataDir.startsWith('/')) throw invalidConfig(`ipam.dataDir ${JSON.stringify(dataDir)} must be an absolute path`);
  const resolvConf = typeof ipam.resolvConf === 'string' && ipam.resolvConf !== '' ? ipam.resolvConf : null;
  return { network: conf.name, rangeSets, routes: parseRoutes(ipam.routes), dataDir, resolvConf, requested };
}
