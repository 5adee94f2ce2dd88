// Bridge VLANs (802.1Q filtering on the ports of a bridge), as `bridge vlan` does it:
// add/delete are RTM_SETLINK/RTM_DELLINK with family AF_BRIDGE and
// IFLA_AF_SPEC { IFLA_BRIDGE_FLAGS, IFLA_BRIDGE_VLAN_INFO... } (byte for byte what
// iproute2 sends); the list is an AF_BRIDGE RTM_GETLINK dump asking for
// RTEXT_FILTER_BRVLAN. The bridge needs vlan_filtering for the VLANs to filter
// anything, and the kernel needs CONFIG_BRIDGE_VLAN_FILTERING (else EOPNOTSUPP).
import { AttrWriter, Attrs, attrList } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { NsContext } from './context.js';
import { invalidArgument, type ErrorContext } from './errors.js';
import { ifinfomsg, resolveIndex } from './link_linux.js';
import type { BridgePortVlans, BridgeVlan, BridgeVlanSpec, LinkRef } from './link.js';

export const VLAN_ID_MIN = 1;
export const VLAN_ID_MAX = 4094;

export interface BridgeVlanOptions {
  /**
   * The bridge device's own VLANs (its "self" port, what the host stack sees); the link
   * must then be the bridge. Default: the VLANs of a port, on its bridge ("master").
   */
  self?: boolean;
}

const refName = (ref: LinkRef): string => (typeof ref === 'string' ? ref : ref.name);

function vlanInfo(flags: number, vid: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(flags, 0);
  b.writeUInt16LE(vid, 2);
  return b;
}

const isVid = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= VLAN_ID_MIN && v <= VLAN_ID_MAX;

const describeSpec = (s: BridgeVlanSpec): string => (s.vidEnd !== undefined ? `${s.vid}-${s.vidEnd}` : `${s.vid}`);

/**
 * The request body (ifinfomsg + attributes) that adds or deletes VLANs of the link with
 * this index; entries are applied by the kernel in order. Exported for the wire tests.
 */
export function bridgeVlanRequest(index: number, specs: readonly BridgeVlanSpec[], opts: BridgeVlanOptions, ctx: ErrorContext): Buffer {
  if (specs.length === 0) throw invalidArgument(ctx, 'no VLAN given');
  const spec = new AttrWriter().u16(C.IFLA_BRIDGE_FLAGS, opts.self ? C.BRIDGE_FLAGS_SELF : C.BRIDGE_FLAGS_MASTER);
  for (const s of specs) {
    if (!isVid(s.vid)) throw invalidArgument(ctx, `VLAN ID ${String(s.vid)} is outside ${VLAN_ID_MIN}..${VLAN_ID_MAX}`);
    const flags = (s.pvid ? C.BRIDGE_VLAN_INFO_PVID : 0) | (s.untagged ? C.BRIDGE_VLAN_INFO_UNTAGGED : 0);
    if (s.vidEnd === undefined || s.vidEnd === s.vid) {
      spec.raw(C.IFLA_BRIDGE_VLAN_INFO, vlanInfo(flags, s.vid));
      continue;
    }
    if (!isVid(s.vidEnd) || s.vidEnd < s.vid) throw invalidArgument(ctx, `VLAN range ${describeSpec(s)} is not a range within ${VLAN_ID_MIN}..${VLAN_ID_MAX}`);
    if (s.pvid) throw invalidArgument(ctx, `VLAN range ${describeSpec(s)} cannot be the PVID (one VLAN is)`);
    spec.raw(C.IFLA_BRIDGE_VLAN_INFO, vlanInfo(flags | C.BRIDGE_VLAN_INFO_RANGE_BEGIN, s.vid));
    spec.raw(C.IFLA_BRIDGE_VLAN_INFO, vlanInfo(flags | C.BRIDGE_VLAN_INFO_RANGE_END, s.vidEnd));
  }
  // Not flagged NLA_F_NESTED, as iproute2 and the Go netlink library send it.
  const w = new AttrWriter().raw(C.IFLA_AF_SPEC, spec.toBuffer());
  return Buffer.concat([ifinfomsg(index, 0, 0, C.AF_BRIDGE), w.toBuffer()]);
}

/** The request body of the dump: every bridge port and bridge, with its VLANs one by one. */
export function bridgeVlanDumpRequest(): Buffer {
  return Buffer.concat([ifinfomsg(0, 0, 0, C.AF_BRIDGE), new AttrWriter().u32(C.IFLA_EXT_MASK, C.RTEXT_FILTER_BRVLAN).toBuffer()]);
}

/** VLAN entries of one IFLA_AF_SPEC, ranges expanded (a compressed dump sends them). */
export function parseBridgeVlans(afSpec: Buffer): BridgeVlan[] {
  const out: BridgeVlan[] = [];
  let rangeStart: number | null = null;
  for (const a of attrList(afSpec)) {
    if (a.type !== C.IFLA_BRIDGE_VLAN_INFO || a.data.length < 4) continue;
    const flags = a.data.readUInt16LE(0);
    const vid = a.data.readUInt16LE(2);
    const pvid = (flags & C.BRIDGE_VLAN_INFO_PVID) !== 0;
    const untagged = (flags & C.BRIDGE_VLAN_INFO_UNTAGGED) !== 0;
    if (flags & C.BRIDGE_VLAN_INFO_RANGE_BEGIN) {
      rangeStart = vid;
      continue;
    }
    const first = (flags & C.BRIDGE_VLAN_INFO_RANGE_END) !== 0 && rangeStart !== null ? rangeStart : vid;
    for (let v = first; v <= vid; v++) out.push({ vid: v, pvid, untagged });
    rangeStart = null;
  }
  return out;
}

export async function listBridgeVlans(h: NsContext): Promise<BridgePortVlans[]> {
  const msgs = await h.sock.request(C.RTM_GETLINK, C.NLM_F_DUMP, bridgeVlanDumpRequest(), { op: 'list', subject: 'bridge VLANs' });
  const out: BridgePortVlans[] = [];
  for (const m of msgs) {
    if (m.type !== C.RTM_NEWLINK) continue;
    const ifindex = m.data.readInt32LE(4);
    const attrs = new Attrs(m.data.subarray(16));
    const master = attrs.u32(C.IFLA_MASTER);
    const spec = attrs.buffer(C.IFLA_AF_SPEC);
    out.push({
      ifindex,
      name: attrs.string(C.IFLA_IFNAME) ?? '',
      masterIndex: master && master !== ifindex ? master : null,
      vlans: spec ? parseBridgeVlans(spec) : [],
    });
  }
  return out;
}

/** The VLANs of one port (or, for a bridge, its own); [] when it has none or is no bridge port. */
export async function getBridgeVlans(h: NsContext, ref: LinkRef): Promise<BridgeVlan[]> {
  const index = await resolveIndex(h, ref, { op: 'list', subject: `bridge VLANs of link "${refName(ref)}"` });
  return (await listBridgeVlans(h)).find((p) => p.ifindex === index)?.vlans ?? [];
}

async function modify(h: NsContext, type: number, op: string, ref: LinkRef, specs: readonly (number | BridgeVlanSpec)[], opts: BridgeVlanOptions): Promise<void> {
  // A delete names VLANs only: flags mean nothing to it.
  const list = specs.map((s): BridgeVlanSpec => (typeof s === 'number' ? { vid: s } : type === C.RTM_DELLINK ? { vid: s.vid, ...(s.vidEnd !== undefined ? { vidEnd: s.vidEnd } : {}) } : s));
  const ctx = { op, subject: `VLAN ${list.map(describeSpec).join(',')} ${opts.self ? 'of bridge' : 'on port'} "${refName(ref)}"` };
  const index = await resolveIndex(h, ref, ctx);
  await h.sock.request(type, 0, bridgeVlanRequest(index, list, opts, ctx), ctx);
}

/** Adds VLANs to a bridge port (or, with self, to the bridge itself), in this order. Adding a VLAN again updates its flags. */
export function addBridgeVlans(h: NsContext, ref: LinkRef, specs: readonly BridgeVlanSpec[], opts: BridgeVlanOptions = {}): Promise<void> {
  return modify(h, C.RTM_SETLINK, 'add bridge', ref, specs, opts);
}

/** Removes VLANs (by VID or range; flags are ignored) from a bridge port, or with self from the bridge. */
export function deleteBridgeVlans(h: NsContext, ref: LinkRef, specs: readonly (number | BridgeVlanSpec)[], opts: BridgeVlanOptions = {}): Promise<void> {
  return modify(h, C.RTM_DELLINK, 'delete bridge', ref, specs, opts);
}
