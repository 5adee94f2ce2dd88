// Names, comments and marks of the portmap plugin's rules, computed exactly as
// the reference (containernetworking/plugins v1.10.0, plugins/meta/portmap/
// portmap_iptables.go, portmap_nftables.go, utils.go) computes them, so that
// either side removes what the other set up.
import { formatHash, iptablesComment, truncateUtf8 } from './names.js';
import type { IpFamily } from './types.js';

// iptables (nat table). "These should never be changed, or else upgrading will require manual intervention."
export const PM_DNAT_CHAIN = 'CNI-HOSTPORT-DNAT';
export const PM_SETMARK_CHAIN = 'CNI-HOSTPORT-SETMARK';
export const PM_MASQ_CHAIN = 'CNI-HOSTPORT-MASQ';
/** Written by plugins before v0.7; DEL still removes a container's chain hanging off it. */
export const PM_OLD_SNAT_CHAIN = 'CNI-HOSTPORT-SNAT';
export const PM_SETMARK_COMMENT = 'CNI portfwd masquerade mark';
export const PM_MASQ_ENTRY_COMMENT = 'CNI portfwd requiring masquerade';
export const DEFAULT_MARK_MASQ_BIT = 13;
/** multiport takes at most 15 ports per rule. */
export const MULTIPORT_MAX = 15;

/** MustFormatChainNameWithPrefix(network, containerID, "DN-"): the container's DNAT chain. */
export const dnatChainName = (network: string, containerId: string): string => formatHash(28, 'CNI-DN-', network + containerId);
/** The pre-v0.7 per-container SNAT chain ("SN-"). */
export const oldSnatChainName = (network: string, containerId: string): string => formatHash(28, 'CNI-SN-', network + containerId);

/** Matches dnatChainName's output. */
export const DNAT_CHAIN_RE = /^CNI-DN-[0-9a-f]{21}$/;

/**
 * The comment of the container's entry rules: `dnat name: "<net>" id: "<id>"`
 * (plain quotes, not Go's %q), cut by trimComment to 253 bytes + "..." past 255,
 * then by the kernel to 255 bytes.
 */
export function dnatComment(network: string, containerId: string): string {
  const full = `dnat name: "${network}" id: "${containerId}"`;
  const trimmed = Buffer.byteLength(full, 'utf8') <= 255 ? full : `${truncateUtf8(full, 253)}...`;
  return iptablesComment(trimmed);
}

/** `%#x/%#x` of 1 << bit, as the SETMARK and MASQ rules carry it. */
export function markDef(bit: number): string {
  const v = `0x${(2 ** bit).toString(16)}`;
  return `${v}/${v}`;
}

// nftables: one table per family (knftables' "ip" and "ip6").
export const NFT_PM_TABLE = 'cni_hostport';
export const NFT_PM_TABLE_COMMENT = 'CNI portmap plugin';
export const NFT_PM_HOSTPORTS = 'hostports';
/** No longer written to, kept (and cleaned) for upgrades, as the reference does. */
export const NFT_PM_HOSTIP_HOSTPORTS = 'hostip_hostports';
export const NFT_PM_HOSTPORTS_ALL = 'hostports_all';
export const NFT_PM_PREROUTING = 'prerouting';
export const NFT_PM_OUTPUT = 'output';
export const NFT_PM_MASQUERADING = 'masquerading';
/** knftables writes the named priorities as numbers: dstnat -100, srcnat 100. */
export const NFT_DSTNAT = -100;
export const NFT_SRCNAT = 100;

export const nftFamily = (f: IpFamily): 'ip' | 'ip6' => (f === 4 ? 'ip' : 'ip6');
