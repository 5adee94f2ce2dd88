// Results across spec versions, as libcni converts them: 0.1.0/0.2.0 have
// ip4/ip6; 0.3.x/0.4.0 have ips[] with a "version"; 1.0.0+ drop it.
import ipaddr from 'ipaddr.js';
import { CniError, ErrorCode } from './errors.js';
import { atLeast, isSemver } from './version.js';
import type { CniInterface, CniResult, CniRoute, Dns, IpConfig } from './types.js';

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function decodeError(where: string, what: string): CniError {
  return new CniError(ErrorCode.DecodingFailure, `${where}: ${what}`);
}

function cidr(v: unknown, where: string): string {
  if (typeof v !== 'string' || !ipaddr.isValidCIDR(v)) throw decodeError(where, `${JSON.stringify(v)} is not a CIDR`);
  return v;
}

function ip(v: unknown, where: string): string {
  if (typeof v !== 'string' || !ipaddr.isValid(v)) throw decodeError(where, `${JSON.stringify(v)} is not an IP address`);
  return v;
}

export const isIpv4Cidr = (c: string): boolean => !c.includes(':');

function parseRoutes(v: unknown, where: string): CniRoute[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw decodeError(where, 'routes must be a list');
  return v.map((r, i) => {
    if (!isObject(r)) throw decodeError(`${where}[${i}]`, 'a route must be an object');
    const route: CniRoute = { dst: cidr(r.dst, `${where}[${i}].dst`) };
    if (r.gw !== undefined && r.gw !== null) route.gw = ip(r.gw, `${where}[${i}].gw`);
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) if (typeof r[k] === 'number') route[k] = r[k];
    return route;
  });
}

function parseDns(v: unknown): Dns | undefined {
  if (!isObject(v)) return undefined;
  const dns: Dns = {};
  for (const k of ['nameservers', 'search', 'options'] as const) {
    const list = v[k];
    if (Array.isArray(list)) dns[k] = list.filter((x): x is string => typeof x === 'string');
  }
  if (typeof v.domain === 'string') dns.domain = v.domain;
  return dns;
}

/** Any version's result (a prevResult, a delegate's output) in the current shape. */
export function parseResult(raw: unknown, where = 'result'): CniResult {
  if (!isObject(raw)) throw decodeError(where, 'must be a JSON object');
  const version = typeof raw.cniVersion === 'string' ? raw.cniVersion : '0.1.0';
  if (!isSemver(version)) throw decodeError(where, `cniVersion ${JSON.stringify(raw.cniVersion)} is not a version`);
  const result: CniResult = { cniVersion: version };
  if (!atLeast(version, '0.3.0')) {
    const ips: IpConfig[] = [];
    const routes: CniRoute[] = [];
    for (const key of ['ip4', 'ip6'] as const) {
      const cfg = raw[key];
      if (cfg === undefined || cfg === null) continue;
      if (!isObject(cfg)) throw decodeError(`${where}.${key}`, 'must be an object');
      const entry: IpConfig = { address: cidr(cfg.ip, `${where}.${key}.ip`) };
      if (cfg.gateway) entry.gateway = ip(cfg.gateway, `${where}.${key}.gateway`);
      ips.push(entry);
      routes.push(...parseRoutes(cfg.routes, `${where}.${key}.routes`));
    }
    if (ips.length) result.ips = ips;
    if (routes.length) result.routes = routes;
  } else {
    if (raw.interfaces !== undefined && raw.interfaces !== null) {
      if (!Array.isArray(raw.interfaces)) throw decodeError(`${where}.interfaces`, 'must be a list');
      result.interfaces = raw.interfaces.map((x, i): CniInterface => {
        if (!isObject(x) || typeof x.name !== 'string') throw decodeError(`${where}.interfaces[${i}]`, 'needs a name');
        const itf: CniInterface = { name: x.name };
        if (typeof x.mac === 'string') itf.mac = x.mac;
        if (typeof x.mtu === 'number') itf.mtu = x.mtu;
        if (typeof x.sandbox === 'string') itf.sandbox = x.sandbox;
        if (typeof x.socketPath === 'string') itf.socketPath = x.socketPath;
        if (typeof x.pciID === 'string') itf.pciID = x.pciID;
        return itf;
      });
    }
    if (raw.ips !== undefined && raw.ips !== null) {
      if (!Array.isArray(raw.ips)) throw decodeError(`${where}.ips`, 'must be a list');
      result.ips = raw.ips.map((x, i): IpConfig => {
        if (!isObject(x)) throw decodeError(`${where}.ips[${i}]`, 'must be an object');
        const entry: IpConfig = { address: cidr(x.address, `${where}.ips[${i}].address`) };
        if (typeof x.interface === 'number') entry.interface = x.interface;
        if (x.gateway) entry.gateway = ip(x.gateway, `${where}.ips[${i}].gateway`);
        return entry;
      });
    }
    const routes = parseRoutes(raw.routes, `${where}.routes`);
    if (routes.length) result.routes = routes;
  }
  const dns = parseDns(raw.dns);
  if (dns) result.dns = dns;
  return result;
}

const compact = <T extends Json>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/**
 * The result as a runtime of `version` expects it, field order as the Go
 * libraries print it. Like them, 0.x results always carry `dns` (an empty
 * object when there is none); 1.x results leave an empty one out (libcni 1.1+).
 */
export function formatResult(result: CniResult, version: string): Json {
  const dns = compact({ ...(result.dns ?? {}) });
  const dnsIfAny = Object.keys(dns).length ? dns : undefined;
  if (!atLeast(version, '0.3.0')) {
    const out: Json = { cniVersion: version };
    const v4 = result.ips?.find((x) => isIpv4Cidr(x.address));
    const v6 = result.ips?.find((x) => !isIpv4Cidr(x.address));
    if (!v4 && !v6) throw new CniError(ErrorCode.IncompatibleVersion, `cannot convert the result to version ${version}: it has no IP address`);
    const block = (c: IpConfig, v4only: boolean) => {
      const routes = (result.routes ?? []).filter((r) => isIpv4Cidr(r.dst) === v4only).map((r) => compact({ dst: r.dst, gw: r.gw }));
      return compact({ ip: c.address, gateway: c.gateway, routes: routes.length ? routes : undefined });
    };
    if (v4) out.ip4 = block(v4, true);
    if (v6) out.ip6 = block(v6, false);
    out.dns = dns;
    return out;
  }
  const modern = atLeast(version, '1.0.0');
  return compact({
    cniVersion: version,
    interfaces: result.interfaces?.map((i) =>
      modern ? compact({ name: i.name, mac: i.mac, mtu: i.mtu, sandbox: i.sandbox, socketPath: i.socketPath, pciID: i.pciID }) : compact({ name: i.name, mac: i.mac, sandbox: i.sandbox }),
    ),
    ips: result.ips?.map((x) =>
      compact({ version: modern ? undefined : isIpv4Cidr(x.address) ? '4' : '6', interface: x.interface, address: x.address, gateway: x.gateway }),
    ),
    routes: result.routes?.map((r) =>
      modern ? compact({ dst: r.dst, gw: r.gw, mtu: r.mtu, advmss: r.advmss, priority: r.priority, table: r.table, scope: r.scope }) : compact({ dst: r.dst, gw: r.gw }),
    ),
    dns: modern ? dnsIfAny : dns,
  });
}
