// portmap: forward host ports to a container (hostPort → containerPort DNAT,
// with masquerade for hairpin and localhost traffic), chained after the plugin
// that gave the container its addresses. Drop-in for the reference plugin
// (containernetworking/plugins v1.10.0 plugins/meta/portmap): the same rules,
// chains, tables and comments, so either removes what the other set up.
import { endianness } from 'node:os';
import { readProcNet, readSysctl, writeSysctl } from '../../kernel/index.js';
import { CniError, ErrorCode, invalidConfig } from '../../cni/errors.js';
import { parseResult } from '../../cni/result.js';
import type { Plugin, PluginContext } from '../../cni/plugin.js';
import type { CniResult } from '../../cni/types.js';
import { SUPPORTED_VERSIONS } from '../../cni/version.js';
import type { ContainerPortmap, FirewallBackendName, IpFamily, Portmapper } from '../../firewall/types.js';
import { parseAddr } from '../../ipam/addr.js';
import { mark, timed } from '../../cni/trace.js';
import { checkBackendOptions, loadPortmapConfig, rawMappings, type PortmapConfig } from './config.js';
import { routeInterface } from './route.js';

/** The firewall layer is loaded only when there are ports to map (most pods have none). */
const firewallLayer = () => import('../../firewall/index.js');

/** prevResult in the current shape; one without a version is in the config's (as libcni reads it). */
function prevResultOf(ctx: PluginContext, command: string): CniResult {
  const prev = ctx.conf.prevResult;
  if (prev === undefined || prev === null) {
    throw invalidConfig(`portmap must be called as a chained plugin: ${command} needs "prevResult" (the result of the plugins before it) in the config`);
  }
  const raw = typeof prev === 'object' && !Array.isArray(prev) && !('cniVersion' in prev) ? { ...prev, cniVersion: ctx.version } : prev;
  return parseResult(raw, 'prevResult');
}

/**
 * The container's first address of each family, as the reference picks them:
 * addresses on an interface known not to be the container's (another name, or
 * no sandbox) are skipped; addresses without an interface index count.
 */
function containerAddresses(prev: CniResult, ifname: string): Partial<Record<IpFamily, string>> {
  const out: Partial<Record<IpFamily, string>> = {};
  const ifaces = prev.interfaces ?? [];
  for (const ip of prev.ips ?? []) {
    const family: IpFamily = ip.address.includes(':') ? 6 : 4;
    if (out[family]) continue;
    if (ip.interface !== undefined && ip.interface >= 0 && ip.interface < ifaces.length) {
      const itf = ifaces[ip.interface]!;
      if (itf.name !== ifname || !itf.sandbox) continue;
    }
    out[family] = ip.address;
  }
  return out;
}

/** The backend as configured, else iptables unless only nftables works here; options of the other one are an error. */
async function backendOf(cfg: PortmapConfig): Promise<FirewallBackendName> {
  let backend = cfg.backend;
  if (!backend) {
    const { chooseBackend } = await firewallLayer();
    backend = await chooseBackend(undefined, null);
    checkBackendOptions(cfg, backend);
  }
  return backend;
}

function containerPortmap(ctx: PluginContext, cfg: PortmapConfig, address: string, family: IpFamily): ContainerPortmap {
  return {
    network: ctx.conf.name,
    containerId: ctx.cmd.containerId,
    address,
    mappings: cfg.mappings,
    snat: cfg.snat,
    markMasqBit: cfg.markMasqBit,
    externalSetMarkChain: cfg.externalSetMarkChain,
    conditions: family === 4 ? cfg.conditionsV4 : cfg.conditionsV6,
    masqAll: cfg.masqAll,
  };
}

/**
 * getRoutableHostIF: the interface the node routes the container's IPv4 address
 * through (the bridge, for the bridge plugin), from /proc/net/route (see route.ts).
 */
function routableHostIf(address: string): string | null {
  const ip = parseAddr(address.split('/')[0]!);
  if (!ip || ip.family !== 4) return null;
  return routeInterface(readProcNet(null, 'route') ?? '', Number(ip.value), endianness() === 'LE');
}

/** route_localnet: 127.0.0.1 may cross a routing boundary, so localhost:hostPort reaches the container. */
async function enableLocalnetRouting(ifname: string): Promise<void> {
  try {
    writeSysctl(null, `net/ipv4/conf/${ifname}/route_localnet`, 1);
  } catch (e) {
    throw new CniError(ErrorCode.Internal, `unable to enable route_localnet on ${ifname}: ${(e as Error).message}`);
  }
}

const udpPorts = (cfg: { mappings: { protocol: string; hostPort: number }[] }) => cfg.mappings.filter((m) => m.protocol === 'udp').map((m) => m.hostPort);

/** Stale UDP flows would keep bypassing the new DNAT; failing to delete them is not fatal (as in the reference). */
async function flushUdp(fw: Portmapper, ports: number[], family: IpFamily, what: string): Promise<void> {
  if (ports.length === 0) return;
  try {
    await fw.flushUdpConntrack(ports, family);
  } catch (e) {
    process.stderr.write(`portmap: failed to delete stale UDP conntrack entries ${what}: ${(e as Error).message}\n`);
  }
}

async function add(ctx: PluginContext): Promise<CniResult> {
  const cfg = loadPortmapConfig(ctx.conf);
  const prev = prevResultOf(ctx, 'ADD');
  if (cfg.mappings.length === 0) return prev;

  mark('p:start');
  const addrs = containerAddresses(prev, ctx.cmd.ifname);
  const backend = await backendOf(cfg);
  // Found before anything changes: a failure here changes nothing.
  const localnetIf = addrs[4] && cfg.snat ? routableHostIf(addrs[4]) : null;
  mark('p:routable');
  const { openPortmapper } = await firewallLayer();
  const fw = openPortmapper(backend, null);
  mark('p:fwloaded');
  try {
    for (const family of [4, 6] as const) {
      const address = addrs[family];
      if (!address) continue;
      await timed('firewall', () => fw.setupPortmap(containerPortmap(ctx, cfg, address, family)));
      // After the rules: new packets of a deleted flow meet the DNAT.
      await flushUdp(fw, udpPorts(cfg), family, `for ${address}`);
      if (family === 4 && localnetIf) await enableLocalnetRouting(localnetIf);
    }
  } catch (e) {
    // Nothing of this container's half-made mapping stays (the shared chains do, as always).
    await fw.teardownPortmap({ network: ctx.conf.name, containerId: ctx.cmd.containerId }).catch(() => undefined);
    throw e;
  }
  return prev;
}

/**
 * Removes this container's rules, found by name and comment: needs neither
 * prevResult nor addresses, covers both backends, and succeeds when they are
 * gone. A config that is no longer valid does not stop it. As the reference,
 * nothing is done when the runtime sends no port mappings.
 */
async function del(ctx: PluginContext): Promise<void> {
  let mappings: unknown[];
  try {
    mappings = rawMappings(ctx.conf);
  } catch {
    return;
  }
  if (mappings.length === 0) return;
  const { openPortmapper } = await firewallLayer();
  const backend = ctx.conf.backend === 'nftables' ? 'nftables' : 'iptables';
  const fw = openPortmapper(backend, null);
  await timed('firewall', () => fw.teardownPortmap({ network: ctx.conf.name, containerId: ctx.cmd.containerId }));
  // A later user of the port (a hostNetwork pod) must not meet this mapping's UDP flows.
  const udp = mappings
    .filter((m): m is { protocol: string; hostPort: number } => typeof m === 'object' && m !== null && typeof (m as { protocol?: unknown }).protocol === 'string')
    .filter((m) => m.protocol.toLowerCase() === 'udp' && Number.isInteger(m.hostPort) && m.hostPort > 0 && m.hostPort < 65536)
    .map((m) => m.hostPort);
  for (const family of [4, 6] as const) await flushUdp(fw, udp, family, 'on DEL');
}

async function check(ctx: PluginContext): Promise<void> {
  const cfg = loadPortmapConfig(ctx.conf);
  const prev = prevResultOf(ctx, 'CHECK');
  if (cfg.mappings.length === 0) return;
  const addrs = containerAddresses(prev, ctx.cmd.ifname);
  const backend = await backendOf(cfg);
  const { openPortmapper } = await firewallLayer();
  const fw = openPortmapper(backend, null);
  const problems: string[] = [];
  for (const family of [4, 6] as const) {
    const address = addrs[family];
    if (!address) continue;
    try {
      await fw.checkPortmap(containerPortmap(ctx, cfg, address, family));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (addrs[4] && cfg.snat) {
    const ifname = routableHostIf(addrs[4]);
    if (ifname && readSysctl(null, `net/ipv4/conf/${ifname}/route_localnet`).trim() !== '1') problems.push(`route_localnet is not enabled on ${ifname}`);
  }
  if (problems.length > 0) throw new CniError(ErrorCode.Internal, `portmap CHECK: ${problems.join('\n')}`);
}

export const portmap: Plugin = { type: 'portmap', versions: SUPPORTED_VERSIONS, add, del, check };
