// bridge: connect a container to a Linux bridge on the host with a veth pair,
// give it addresses from an IPAM plugin, and (optionally) make the bridge its
// gateway and masquerade what leaves the subnet. Drop-in for the reference
// plugin; unlike it, a failed ADD leaves nothing behind.
import { Handle, KernelError, isExists, isNotFound, openNetns, writeSysctl, type Link, type Netns } from '../../kernel/index.js';
import { CniError, ErrorCode, invalidConfig } from '../../cni/errors.js';
import { delegateAdd, delegateCheck, delegateDel, delegateGc, delegateStatus } from '../../cni/delegate.js';
import { isIpv4Cidr, parseResult } from '../../cni/result.js';
import type { GcContext, Plugin, PluginContext } from '../../cni/plugin.js';
import type { CniInterface, CniResult, Dns } from '../../cni/types.js';
import { SUPPORTED_VERSIONS } from '../../cni/version.js';
import type { Firewall } from '../../firewall/index.js';
import { containsAddr, formatAddr, parseCidr } from '../../ipam/addr.js';
import { configureInterface } from '../common/ipconfig.js';
import { openContainerNetns, withContainerNetns } from '../common/netns.js';
import { loadBridgeConfig, type BridgeConfig } from './config.js';
import { NO_VLAN_SUPPORT, ensureVlanGateway, goErrorText, hasPortVlans, portVlanProblems, randomVethName, setupPortVlans } from './vlan.js';
import { mark, timed } from '../../cni/trace.js';

const CONTAINER_IF = 2; // index of the container interface in the result: [bridge, host veth, container]

/**
 * The bridge exists, is a bridge, and is up; says whether this call created it. A bridge
 * it creates for VLANs gets vlan_filtering; an existing one is left as it is (as the reference).
 */
async function ensureBridge(host: Handle, cfg: BridgeConfig) {
  let created = true;
  try {
    await host.addLink({ kind: 'bridge', name: cfg.bridge, ...(cfg.mtu ? { mtu: cfg.mtu } : {}), ...(cfg.vlanFiltering ? { vlanFiltering: true } : {}) });
  } catch (e) {
    if (isExists(e)) created = false;
    else if (cfg.vlanFiltering && e instanceof KernelError && e.kind === 'unsupported') {
      // The reference's message, word for word.
      throw new CniError(ErrorCode.Internal, `failed to create bridge "${cfg.bridge}": could not add "${cfg.bridge}": ${goErrorText(e)}`, NO_VLAN_SUPPORT);
    } else throw e;
  }
  const br = await host.getLink(cfg.bridge);
  if (br.kind !== 'bridge') throw new CniError(ErrorCode.Internal, `"${cfg.bridge}" already exists but is not a bridge (it is a ${br.kind})`);
  // A bridge that was there: VLANs on its ports need the kernel's bridge VLAN support (read, nothing changed).
  if (!created && hasPortVlans(cfg) && br.bridge?.vlanDefaultPvid === null) {
    throw new CniError(ErrorCode.Internal, `failed to setup vlan tag on bridge "${cfg.bridge}": operation not supported`, NO_VLAN_SUPPORT);
  }
  // The plugin owns the routes of this interface, not router advertisements.
  trySysctl(null, `net/ipv6/conf/${cfg.bridge}/accept_ra`, 0);
  await host.setLink(br, { up: true, ...(cfg.promiscMode ? { promisc: true } : {}) });
  return { br, created };
}

/** Undo for a bridge this ADD created: only while no other container uses it. */
async function removeBridgeIfUnused(host: Handle, name: string): Promise<void> {
  const br = await host.findLink(name);
  if (!br) return;
  const ports = (await host.listLinks()).filter((l) => l.masterIndex === br.ifindex);
  if (ports.length === 0) await host.deleteLink(br).catch((e: unknown) => { if (!isNotFound(e)) throw e; });
}

function trySysctl(netns: Netns | null, key: string, value: number): void {
  try {
    writeSysctl(netns, key, value);
  } catch {
    // IPv6 may be disabled, or the sysctl absent on this kernel: as the reference, not fatal.
  }
}

/** The veth pair, container end named CNI_IFNAME inside the netns, host end veth<8 hex> on the bridge. */
async function createVeth(host: Handle, container: Handle, containerNs: Netns, cfg: BridgeConfig, ifname: string) {
  for (let attempt = 0; attempt < 10; attempt++) {
    const hostName = randomVethName();
    try {
      const hostVeth = await host.addLink({
        kind: 'veth',
        name: hostName,
        ...(cfg.mtu ? { mtu: cfg.mtu } : {}),
        peer: { name: ifname, netns: containerNs, ...(cfg.mtu ? { mtu: cfg.mtu } : {}), ...(cfg.mac ? { mac: cfg.mac } : {}) },
      });
      return hostVeth;
    } catch (e) {
      if (isExists(e) && !(await container.findLink(ifname))) continue; // the random host name was taken
      throw e;
    }
  }
  throw new CniError(ErrorCode.Internal, 'failed to find a unique veth name');
}

interface Gateways {
  /** Bridge addresses to ensure: gateway with the container's prefix. */
  bridgeAddrs: { family: 4 | 6; cidr: string }[];
}

/** Gateways per family, default routes, and which interface each IP is on (as the reference's calcGateways). */
function calcGateways(result: CniResult, cfg: BridgeConfig): Gateways {
  const out: Gateways = { bridgeAddrs: [] };
  const defaultFound = { 4: false, 6: false };
  const routes = result.routes ?? [];
  for (const ip of result.ips ?? []) {
    const family = isIpv4Cidr(ip.address) ? 4 : 6;
    ip.interface = CONTAINER_IF;
    const cidr = parseCidr(ip.address)!;
    if (!ip.gateway && cfg.isGateway) {
      const network = cidr.ip.value & ~((1n << BigInt((family === 4 ? 32 : 128) - cidr.prefix)) - 1n);
      ip.gateway = formatAddr({ family, value: network + 1n });
    }
    if (cfg.isDefaultGateway && !defaultFound[family]) {
      const any = family === 4 ? '0.0.0.0/0' : '::/0';
      if (!routes.some((r) => r.dst === any && r.gw)) routes.push(ip.gateway ? { dst: any, gw: ip.gateway } : { dst: any });
      defaultFound[family] = true;
    }
    if (cfg.isGateway && ip.gateway) out.bridgeAddrs.push({ family, cidr: `${ip.gateway}/${cidr.prefix}` });
  }
  if (routes.length) result.routes = routes;
  return out;
}

/**
 * The gateway address on the bridge (or on the VLAN's gateway interface); another address
 * of the family is the famous conflict. `what` begins the error, as in the reference.
 */
async function ensureGatewayAddr(host: Handle, cfg: BridgeConfig, name: string, what: string, family: 4 | 6, cidr: string): Promise<void> {
  const want = parseCidr(cidr)!;
  for (const a of await host.listAddrs({ link: name, family })) {
    if (a.address === formatAddr(want.ip) && a.prefixLen === want.prefix) return;
    const have = parseCidr(`${a.address}/${a.prefixLen}`)!;
    // Several IPv6 addresses may coexist when their subnets do not overlap; IPv4 has one.
    const conflicts = family === 4 || containsAddr(have, want.ip) || containsAddr(want, have.ip);
    if (!conflicts) continue;
    if (!cfg.forceAddress) {
      throw new CniError(
        ErrorCode.Internal,
        `${what}: "${name}" already has an IP address different from ${cidr}`,
        `${name} has ${a.address}/${a.prefixLen}; set "forceAddress": true to replace it, or remove it (a stale address of an old subnet?)`,
      );
    }
    await host.deleteAddr(name, `${a.address}/${a.prefixLen}`);
  }
  try {
    await host.addAddr(name, cidr);
  } catch (e) {
    if (!isExists(e)) throw e;
  }
  // Pin the bridge's MAC: otherwise it follows the lowest MAC of its ports as they come and go.
  const link = await host.getLink(name);
  if (link.mac) await host.setLink(link, { mac: link.mac });
}

/** The firewall layer is loaded only when ipMasq asks for it (it is most of a plugin's code). */
const firewallLayer = () => import('../../firewall/index.js');
/** The MAC spoof check alone (nftables, bridge family). */
const spoofCheckLayer = () => import('../../firewall/spoofcheck_nftables.js');

async function firewallFor(cfg: BridgeConfig): Promise<Firewall> {
  const { chooseBackend, openFirewall } = await firewallLayer();
  return openFirewall(await chooseBackend(cfg.ipMasqBackend, null), null);
}

const hasDns = (dns: Dns | undefined): dns is Dns =>
  !!dns && (!!dns.nameservers?.length || !!dns.domain || !!dns.search?.length || !!dns.options?.length);

async function add(ctx: PluginContext): Promise<CniResult> {
  mark('b:start');
  const cfg = loadBridgeConfig(ctx.conf, ctx.cmd.args);
  const { cmd } = ctx;
  const containerNs = openContainerNetns(cmd.netns);
  const host = Handle.open();
  const container = Handle.open(containerNs);
  // What this ADD did, undone in reverse if a later step fails.
  const undo: (() => Promise<void>)[] = [];
  try {
    // Everything that can be refused is refused before anything changes.
    if (await container.findLink(cmd.ifname)) {
      throw new CniError(ErrorCode.Internal, `container veth name provided (${cmd.ifname}) already exists in ${cmd.netns}`);
    }
    // VLANs need the kernel's bridge VLAN filtering. Creating the bridge is what asks
    // for it (a kernel without refuses, and nothing changed), so for them it comes first.
    let bridgeStep: Awaited<ReturnType<typeof ensureBridge>> | null = null;
    if (cfg.vlanFiltering) {
      bridgeStep = await ensureBridge(host, cfg);
      if (bridgeStep.created) undo.push(() => removeBridgeIfUnused(host, cfg.bridge));
    }
    mark('b:checked');
    // IPAM first: an exhausted range or a duplicate then changes nothing at all.
    let ipam: CniResult | null = null;
    if (cfg.ipamType) {
      const ipamType = cfg.ipamType;
      ipam = await timed('ipam', () => delegateAdd(ipamType, cmd, cmd.stdin));
      undo.push(() => delegateDel(ipamType, cmd, cmd.stdin));
      if (!ipam.ips?.length) throw new CniError(ErrorCode.Internal, `IPAM plugin ${ipamType} returned no IP configuration`);
    }

    if (!bridgeStep) {
      bridgeStep = await ensureBridge(host, cfg);
      if (bridgeStep.created) undo.push(() => removeBridgeIfUnused(host, cfg.bridge));
    }
    const { br } = bridgeStep;
    mark('b:bridge');
    const hostVeth = await createVeth(host, container, containerNs, cfg, cmd.ifname);
    undo.push(() => host.deleteLink(hostVeth.name).catch((e: unknown) => { if (!isNotFound(e)) throw e; }));
    mark('b:veth');
    trySysctl(null, `net/ipv6/conf/${hostVeth.name}/accept_ra`, 0);
    await host.setLink(hostVeth, { up: true, master: br });
    await host.setBridgePort(hostVeth, { hairpin: cfg.hairpinMode, ...(cfg.portIsolation ? { isolated: true } : {}) });
    await setupPortVlans(host, hostVeth, cfg.vlan, cfg.vlanTrunk, cfg.preserveDefaultVlan);
    const contLink = await container.getLink(cmd.ifname);
    mark('b:port');

    if (cfg.macspoofchk) {
      const { NftablesSpoofCheck } = await spoofCheckLayer();
      const sc = new NftablesSpoofCheck(null);
      const spoof = { containerId: cmd.containerId, ifname: cmd.ifname, hostIface: hostVeth.name, mac: contLink.mac ?? '' };
      undo.push(() => sc.teardown(spoof));
      await timed('spoofcheck', () => sc.setup(spoof));
    }

    const result: CniResult = {
      cniVersion: ctx.version,
      interfaces: [
        { name: br.name, mac: br.mac ?? '' },
        { name: hostVeth.name, mac: hostVeth.mac ?? '' },
        { name: cmd.ifname, mac: contLink.mac ?? '', sandbox: cmd.netns },
      ],
    };

    if (ipam) {
      result.ips = ipam.ips;
      if (ipam.routes?.length) result.routes = ipam.routes;
      if (ipam.dns) result.dns = ipam.dns;
      const gws = calcGateways(result, cfg);

      // DAD makes a new IPv6 address unusable for a second; the reference turns it off unless asked.
      trySysctl(containerNs, `net/ipv6/conf/${cmd.ifname}/accept_dad`, cfg.enabledad ? 1 : 0);
      if (cfg.enabledad) trySysctl(containerNs, `net/ipv6/conf/${cmd.ifname}/enhanced_dad`, 1);
      trySysctl(containerNs, `net/ipv4/conf/${cmd.ifname}/arp_notify`, 1);
      mark('b:sysctls');
      await configureInterface(container, cmd.ifname, CONTAINER_IF, result);
      mark('b:configured');

      if (cfg.isGateway && cfg.vlan !== 0 && gws.bridgeAddrs.length > 0) {
        // The VLAN's gateway is an interface of its own, `<bridge>.<vlan>` (see ensureVlanGateway).
        let gw: Link;
        try {
          const r = await ensureVlanGateway(host, br, cfg.vlan, cfg.preserveDefaultVlan);
          if (r.created) undo.push(() => host.deleteLink(r.link.name).catch((e: unknown) => { if (!isNotFound(e)) throw e; }));
          gw = r.link;
        } catch (e) {
          if (e instanceof CniError) throw new CniError(e.code, `failed to create vlan interface: ${e.message}`, e.details);
          throw e;
        }
        result.interfaces!.push({ name: gw.name, mac: gw.mac ?? '' });
        for (const { family, cidr } of gws.bridgeAddrs) await ensureGatewayAddr(host, cfg, gw.name, 'failed to set vlan interface for bridge with addr', family, cidr);
        result.interfaces![3]!.mac = (await host.getLink(gw.name)).mac ?? '';
        if (gws.bridgeAddrs.some((g) => g.family === 4)) writeSysctl(null, 'net/ipv4/ip_forward', 1);
        if (gws.bridgeAddrs.some((g) => g.family === 6)) writeSysctl(null, 'net/ipv6/conf/all/forwarding', 1);
      } else if (cfg.isGateway) {
        for (const { family, cidr } of gws.bridgeAddrs) await ensureGatewayAddr(host, cfg, cfg.bridge, 'failed to set bridge addr', family, cidr);
        if (gws.bridgeAddrs.some((g) => g.family === 4)) writeSysctl(null, 'net/ipv4/ip_forward', 1);
        if (gws.bridgeAddrs.some((g) => g.family === 6)) writeSysctl(null, 'net/ipv6/conf/all/forwarding', 1);
      }
      if (cfg.ipMasq) {
        const fw = await firewallFor(cfg);
        const masq = { network: ctx.conf.name, containerId: cmd.containerId, ifname: cmd.ifname, addresses: (result.ips ?? []).map((i) => i.address) };
        undo.push(() => fw.teardownContainerMasquerade(masq));
        await timed('firewall', () => fw.setupContainerMasquerade(masq));
      }
    } else if (!cfg.disableContainerInterface) {
      await container.setLinkUp(cmd.ifname);
    }

    mark('b:gw');
    // The bridge's MAC may have changed when the first port joined or its address was set.
    result.interfaces![0]!.mac = (await host.getLink(cfg.bridge)).mac ?? '';
    if (hasDns(ctx.conf.dns)) result.dns = ctx.conf.dns;
    return result;
  } catch (e) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // Keep undoing; the ADD's own error is what the runtime must see.
      }
    }
    throw e;
  } finally {
    host.close();
    container.close();
    containerNs.close();
  }
}

async function del(ctx: PluginContext): Promise<void> {
  const cfg = loadBridgeConfig(ctx.conf, ctx.cmd.args);
  const { cmd } = ctx;
  let addresses: string[] | undefined;
  if (cmd.netns) {
    let netns: Netns | null = null;
    try {
      netns = openNetns(cmd.netns);
    } catch (e) {
      if (!isNotFound(e)) throw e; // a namespace already gone took the interface with it
    }
    if (netns) {
      const h = Handle.open(netns);
      try {
        const link = await h.findLink(cmd.ifname);
        if (link) {
          addresses = (await h.listAddrs({ link })).filter((a) => a.scope === 0).map((a) => `${a.address}/${a.prefixLen}`);
          await h.deleteLink(link).catch((e: unknown) => { if (!isNotFound(e)) throw e; });
        }
      } finally {
        h.close();
        netns.close();
      }
    }
  }
  if (cfg.ipamType) {
    const ipamType = cfg.ipamType;
    await timed('ipam', () => delegateDel(ipamType, cmd, cmd.stdin));
  }
  // Found by name and comment: also when the namespace or the interface is gone (the
  // reference then leaves the chains behind).
  if (cfg.macspoofchk) {
    const { NftablesSpoofCheck } = await spoofCheckLayer();
    await timed('spoofcheck', () => new NftablesSpoofCheck(null).teardown({ containerId: cmd.containerId, ifname: cmd.ifname }));
  }
  // Unlike the reference, also when the interface was already gone: its rules are
  // found by name. Teardown covers both backends (the pod may come from another
  // configuration), so DEL does not consult ipMasqBackend: a bad value must not fail it.
  if (cfg.ipamType && cfg.ipMasq) {
    const { openFirewall } = await firewallLayer();
    const fw = openFirewall('iptables', null);
    await timed('firewall', () => fw.teardownContainerMasquerade({ network: ctx.conf.name, containerId: cmd.containerId, ifname: cmd.ifname, ...(addresses ? { addresses } : {}) }));
  }
}

function checkFailed(msg: string): CniError {
  return new CniError(ErrorCode.Internal, `bridge CHECK: ${msg}`);
}

async function check(ctx: PluginContext): Promise<void> {
  const cfg = loadBridgeConfig(ctx.conf, ctx.cmd.args);
  const { cmd } = ctx;
  if (ctx.conf.prevResult === undefined) throw invalidConfig('CHECK needs "prevResult" (the result of ADD) in the config');
  const prev = parseResult(ctx.conf.prevResult, 'prevResult');
  if (cfg.ipamType) await delegateCheck(cfg.ipamType, cmd, cmd.stdin);
  const ifaces = prev.interfaces ?? [];
  const contIdx = ifaces.findIndex((i) => i.name === cmd.ifname && i.sandbox === cmd.netns);
  if (contIdx < 0) throw checkFailed(`prevResult has no interface ${cmd.ifname} in ${cmd.netns}`);
  const contWant: CniInterface = ifaces[contIdx]!;
  const host = Handle.open();
  let port: Link | null = null;
  let contMac = '';
  try {
    const br = await host.findLink(cfg.bridge);
    if (!br || br.kind !== 'bridge') throw checkFailed(`bridge ${cfg.bridge} is missing`);
    await withContainerNetns(cmd.netns, async (container, containerNs) => {
      const link = await container.findLink(cmd.ifname);
      if (!link) throw checkFailed(`interface ${cmd.ifname} is missing in ${cmd.netns}`);
      if (link.kind !== 'veth') throw checkFailed(`${cmd.ifname} in ${cmd.netns} is a ${link.kind}, not a veth`);
      if (contWant.mac && link.mac !== contWant.mac.toLowerCase()) throw checkFailed(`${cmd.ifname} has MAC ${link.mac}, the result says ${contWant.mac}`);
      const have = new Set((await container.listAddrs({ link })).map((a) => `${a.address}/${a.prefixLen}`));
      for (const ip of (prev.ips ?? []).filter((i) => i.interface === contIdx)) {
        const c = parseCidr(ip.address)!;
        if (!have.has(`${formatAddr(c.ip)}/${c.prefix}`)) throw checkFailed(`address ${ip.address} is missing on ${cmd.ifname}`);
      }
      const routes = await container.listRoutes();
      const routes6 = await container.listRoutes({ family: 6 });
      for (const r of prev.routes ?? []) {
        if (![...routes, ...routes6].some((x) => x.dst === r.dst && (!r.gw || x.gateway === r.gw))) {
          throw checkFailed(`route ${r.dst}${r.gw ? ` via ${r.gw}` : ''} is missing in ${cmd.netns}`);
        }
      }
      // The host end: a port of the bridge whose peer is this very interface.
      const peerIsIt = async (name: string): Promise<boolean> => {
        const v = await host.findLink(name);
        const p = v && host.vethPeer(v);
        return !!v && v.masterIndex === br.ifindex && !!p && p.ifindex === link.ifindex && p.netnsId === (await host.netnsId(containerNs));
      };
      const hostVeths = ifaces.filter((i, idx) => idx !== contIdx && !i.sandbox && i.name !== cfg.bridge);
      for (const v of hostVeths) if (!port && (await peerIsIt(v.name))) port = await host.getLink(v.name);
      if (!port) throw checkFailed(`no port of ${cfg.bridge} is the peer of ${cmd.ifname} in ${cmd.netns}`);
      contMac = link.mac ?? '';
    });
    // Not checked by the reference: the port's VLANs and the spoof check.
    const vlanProblems = hasPortVlans(cfg) ? portVlanProblems(await host.getBridgeVlans(port!), cfg) : [];
    if (vlanProblems.length > 0) throw checkFailed(`VLANs of ${port!.name} on ${cfg.bridge}: ${vlanProblems.join('; ')}`);
  } finally {
    host.close();
  }
  if (cfg.macspoofchk) {
    const { NftablesSpoofCheck } = await spoofCheckLayer();
    try {
      await new NftablesSpoofCheck(null).check({ containerId: cmd.containerId, ifname: cmd.ifname, hostIface: port!.name, mac: contMac });
    } catch (e) {
      throw checkFailed((e as Error).message);
    }
  }
  if (cfg.ipamType && cfg.ipMasq) {
    const fw = await firewallFor(cfg);
    try {
      await fw.checkContainerMasquerade({ network: ctx.conf.name, containerId: cmd.containerId, ifname: cmd.ifname, addresses: (prev.ips ?? []).map((i) => i.address) });
    } catch (e) {
      throw checkFailed((e as Error).message);
    }
  }
}

/** IPAM's GC, then the masquerades of containers the runtime no longer lists. */
async function gc(ctx: GcContext): Promise<void> {
  const cfg = loadBridgeConfig(ctx.conf, ctx.cmd.args);
  if (cfg.ipamType) await delegateGc(cfg.ipamType, ctx.cmd, ctx.cmd.stdin);
  if (!cfg.ipMasq) return;
  const valid = new Set(ctx.validAttachments.map((a) => a.containerId));
  const { FIREWALL_BACKENDS, openFirewall, supportsIptables, supportsNftables } = await firewallLayer();
  const supported = { iptables: await supportsIptables(null), nftables: await supportsNftables(null) };
  for (const backend of FIREWALL_BACKENDS.filter((b) => supported[b])) {
    const fw = openFirewall(backend, null);
    for (const m of await fw.listContainerMasquerades()) {
      // Only what is provably this network's and provably unused.
      if (m.network !== ctx.conf.name || !m.containerId || valid.has(m.containerId)) continue;
      await fw.teardownContainerMasquerade({ network: m.network, containerId: m.containerId, ifname: m.ifname ?? '' });
    }
  }
}

async function status(ctx: PluginContext): Promise<void> {
  const cfg = loadBridgeConfig(ctx.conf, ctx.cmd.args);
  if (cfg.ipamType) await delegateStatus(cfg.ipamType, ctx.cmd, ctx.cmd.stdin);
}

export const bridge: Plugin = { type: 'bridge', versions: SUPPORTED_VERSIONS, add, del, check, gc, status };
