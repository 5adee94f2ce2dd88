// The bridge plugin's VLANs, as the reference (plugins/main/bridge/bridge.go v1.10.0)
// sets them: setupVeth → removeDefaultVlan + BridgeVlanAdd, and ensureVlanInterface
// for a gateway on a VLAN. Its error messages are kept (people search for them);
// twill adds in `details` what a kernel without bridge VLAN support means.
import { closeSync, openSync, readSync } from 'node:fs';
import { Handle, KernelError, isExists, writeSysctl, type BridgeVlan, type BridgeVlanSpec, type Link } from '../../kernel/index.js';
import { CniError, ErrorCode } from '../../cni/errors.js';
import type { BridgeConfig } from './config.js';

export const NO_VLAN_SUPPORT =
  'this kernel has no bridge VLAN support (it was built without CONFIG_BRIDGE_VLAN_FILTERING, which needs 802.1Q): ' +
  '"vlan" and "vlanTrunk" cannot work on this node; use a kernel with 802.1Q, or remove them from the network config';

/** Go's texts for the errnos netlink calls return, so that messages read as the reference's. */
const GO_ERRNO_TEXT: Record<string, string> = {
  EOPNOTSUPP: 'operation not supported',
  ENOTSUP: 'operation not supported',
  EINVAL: 'invalid argument',
  EEXIST: 'file exists',
  ENOENT: 'no such file or directory',
  ENODEV: 'no such device',
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  EBUSY: 'device or resource busy',
  ERANGE: 'numerical result out of range',
  ENOSPC: 'no space left on device',
  ENOMEM: 'cannot allocate memory',
};

export const goErrorText = (e: unknown): string =>
  e instanceof KernelError ? (GO_ERRNO_TEXT[e.code] ?? e.message) : e instanceof Error ? e.message : String(e);

const isUnsupported = (e: unknown): boolean => e instanceof KernelError && e.kind === 'unsupported';

/** A failed VLAN step, in the reference's words; the details say why when the kernel cannot do VLANs. */
export function vlanError(msg: string, e: unknown): CniError {
  return new CniError(ErrorCode.Internal, `${msg}: ${goErrorText(e)}`, isUnsupported(e) ? NO_VLAN_SUPPORT : e instanceof KernelError ? e.message : '');
}

/** Whether the port gets VLANs (not only the bridge vlan_filtering). */
export const hasPortVlans = (cfg: Pick<BridgeConfig, 'vlan' | 'vlanTrunk'>): boolean => cfg.vlan !== 0 || cfg.vlanTrunk.length > 0;

/** Sorted, distinct VIDs as the fewest entries (runs become ranges). */
export function vidRanges(vids: readonly number[], flags: { pvid?: boolean; untagged?: boolean } = {}): BridgeVlanSpec[] {
  const out: BridgeVlanSpec[] = [];
  for (const vid of vids) {
    const last = out[out.length - 1];
    if (last && (last.vidEnd ?? last.vid) === vid - 1) last.vidEnd = vid;
    else out.push({ vid, ...flags });
  }
  return out;
}

/**
 * The entries the reference adds to a port, in its order: `vlan` as PVID and untagged,
 * the trunk tagged, and without `vlan` VID 1 as PVID untagged (its "native" VLAN).
 */
export function portVlanSpecs(vlan: number, trunk: readonly number[]): BridgeVlanSpec[] {
  const out: BridgeVlanSpec[] = [];
  if (vlan !== 0) out.push({ vid: vlan, pvid: true, untagged: true });
  out.push(...vidRanges(trunk));
  if (vlan === 0 && trunk.length > 0) out.push({ vid: 1, pvid: true, untagged: true });
  return out;
}

/**
 * What a port holds after `specs` are added on top of `start`, by the kernel's rules:
 * adding a VID again replaces its untagged flag; a port has one PVID, which a later
 * entry of the same VID without the flag takes away.
 */
export function applyPortVlans(start: readonly BridgeVlan[], specs: readonly BridgeVlanSpec[]): BridgeVlan[] {
  const untagged = new Map<number, boolean>(start.map((v) => [v.vid, v.untagged]));
  let pvid = start.find((v) => v.pvid)?.vid ?? 0;
  for (const s of specs) {
    for (let vid = s.vid; vid <= (s.vidEnd ?? s.vid); vid++) {
      untagged.set(vid, !!s.untagged);
      if (s.pvid) pvid = vid;
      else if (pvid === vid) pvid = 0;
    }
  }
  return [...untagged.entries()].sort(([a], [b]) => a - b).map(([vid, u]) => ({ vid, pvid: vid === pvid, untagged: u }));
}

/**
 * The host end's VLANs: every VLAN it has (its default, VID 1) removed unless
 * preserveDefaultVlan, then the PVID and the trunk, in one request.
 */
export async function setupPortVlans(host: Handle, port: Link, vlan: number, trunk: readonly number[], preserveDefaultVlan: boolean): Promise<void> {
  if (vlan === 0 && trunk.length === 0) return;
  if (!preserveDefaultVlan) {
    try {
      const have = await host.getBridgeVlans(port);
      if (have.length > 0) await host.deleteBridgeVlans(port, vidRanges(have.map((v) => v.vid)));
    } catch (e) {
      throw vlanError(`failed to remove default vlan on interface "${port.name}"`, e);
    }
  }
  try {
    await host.addBridgeVlans(port, portVlanSpecs(vlan, trunk));
  } catch (e) {
    throw vlanError(`failed to setup vlan tag on interface "${port.name}"`, e);
  }
}

/** What is wrong with a port's VLANs (for CHECK); [] when they are what ADD set. */
export function portVlanProblems(have: readonly BridgeVlan[], cfg: Pick<BridgeConfig, 'vlan' | 'vlanTrunk' | 'preserveDefaultVlan'>): string[] {
  if (!hasPortVlans(cfg)) return [];
  const show = (v: BridgeVlan) => `${v.vid}${v.pvid ? ' PVID' : ''}${v.untagged ? ' untagged' : ''}`;
  const specs = portVlanSpecs(cfg.vlan, cfg.vlanTrunk);
  const want = applyPortVlans([], specs);
  const problems: string[] = [];
  for (const w of want) {
    const h = have.find((v) => v.vid === w.vid);
    // With preserveDefaultVlan, the port's own default VLAN may have lost the PVID to ours, nothing else.
    if (!h || h.untagged !== w.untagged || h.pvid !== w.pvid) problems.push(`VLAN ${show(w)} is ${h ? `${show(h)} instead` : 'missing'}`);
  }
  if (!cfg.preserveDefaultVlan) {
    for (const h of have) if (!want.some((w) => w.vid === h.vid)) problems.push(`VLAN ${show(h)} should not be there`);
  }
  return problems;
}

/** veth + 8 hex digits, as the reference names host ends (from the kernel's random pool; node:crypto costs a plugin start ~5 ms). */
export function randomVethName(): string {
  const fd = openSync('/dev/urandom', 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, null);
    return `veth${b.toString('hex')}`;
  } finally {
    closeSync(fd);
  }
}

/**
 * The reference's ensureVlanInterface: the gateway of a VLAN is not an 802.1Q
 * sub-interface but a veth pair on the host, `<bridge>.<vid>` (which gets the gateway
 * address) and a port of the bridge (veth + 8 hex) with that VLAN as PVID, untagged.
 * An existing `<bridge>.<vid>` is used as it is. Says whether this call created it.
 */
export async function ensureVlanGateway(host: Handle, br: Link, vid: number, preserveDefaultVlan: boolean): Promise<{ link: Link; created: boolean }> {
  const name = `${br.name}.${vid}`;
  const existing = await host.findLink(name);
  if (existing) return { link: existing, created: false };
  let port: Link | null = null;
  for (let attempt = 0; attempt < 10 && !port; attempt++) {
    try {
      port = await host.addLink({ kind: 'veth', name: randomVethName(), mtu: br.mtu, peer: { name, mtu: br.mtu } });
    } catch (e) {
      if (isExists(e) && !(await host.findLink(name))) continue; // the random name was taken
      throw new CniError(ErrorCode.Internal, `faild to create vlan gateway "${name}": ${goErrorText(e)}`, e instanceof KernelError ? e.message : '');
    }
  }
  if (!port) throw new CniError(ErrorCode.Internal, `faild to create vlan gateway "${name}": failed to find a unique veth name`);
  try {
    try {
      writeSysctl(null, `net/ipv6/conf/${port.name}/accept_ra`, 0);
    } catch {
      // IPv6 may be off: as the reference, not fatal.
    }
    await host.setLink(port, { up: true, master: br });
    await host.setBridgePort(port, { hairpin: false });
    await setupPortVlans(host, port, vid, [], preserveDefaultVlan);
    await host.setLinkUp(name);
  } catch (e) {
    await host.deleteLink(name).catch(() => undefined);
    if (e instanceof CniError) throw new CniError(e.code, `faild to create vlan gateway "${name}": ${e.message}`, e.details);
    throw e;
  }
  return { link: await host.getLink(name), created: true };
}
