// Names and comments of the per-container masquerade, computed exactly as the
// reference (containernetworking/plugins pkg/utils/utils.go, pkg/ip/ipmasq_*_linux.go)
// computes them, so that either side removes what the other set up.
import { createHash } from 'node:crypto';

const sha512hex = (s: string): string => createHash('sha512').update(s, 'utf8').digest('hex');

/** MustFormatHashWithPrefix: prefix + sha512 hex, cut to `length` characters. */
export function formatHash(length: number, prefix: string, toHash: string): string {
  return `${prefix}${sha512hex(toHash)}`.slice(0, length);
}

/** FormatChainName: `CNI-` + 24 hex of sha512(network + containerID); 28 characters in all. */
export function masqChainName(network: string, containerId: string): string {
  return formatHash(28, 'CNI-', network + containerId);
}

/** Matches masqChainName's output (portmap's `CNI-DN-…` chains do not: "DN-" is not hex). */
export const MASQ_CHAIN_RE = /^CNI-[0-9a-f]{24}$/;

// unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.
const GO_PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
const GO_SHORT_ESCAPES: Record<string, string> = { '\x07': '\\a', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' };

/** Go's strconv.Quote (what `%q` prints), on the string's code points. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    // A lone surrogate cannot be UTF-8: Go's JSON decoder would have made it U+FFFD.
    const r = cp >= 0xd800 && cp <= 0xdfff ? '\ufffd' : ch;
    if (r === '"' || r === '\\') out += `\\${r}`;
    else if (GO_PRINTABLE.test(r)) out += r;
    else if (GO_SHORT_ESCAPES[r]) out += GO_SHORT_ESCAPES[r];
    else if (cp < 0x80) out += `\\x${cp.toString(16).padStart(2, '0')}`;
    else if (cp < 0x10000) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

/** FormatComment: `name: "<network>" id: "<containerID>"` with Go quoting. */
export function masqComment(network: string, containerId: string): string {
  return `name: ${goQuote(network)} id: ${goQuote(containerId)}`;
}

/**
 * The comment as the kernel keeps it: iptables' comment match silently cuts at
 * 255 bytes (XT_MAX_COMMENT_LEN - 1), for both variants. Comparing with the cut
 * form keeps setup idempotent and check true for long container IDs.
 */
export const IPT_COMMENT_MAX = 255;
export const iptablesComment = (comment: string): string => truncateUtf8(comment, IPT_COMMENT_MAX);

/** Reads masqComment back (for listing); null when it is not one. */
export function parseMasqComment(comment: string): { network: string; containerId: string } | null {
  const m = /^name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")$/u.exec(comment);
  if (!m) return null;
  const network = goUnquote(m[1]);
  const containerId = goUnquote(m[2]);
  return network === null || containerId === null ? null : { network, containerId };
}

function goUnquote(q: string): string | null {
  let out = '';
  const body = q.slice(1, -1);
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c !== '\\') {
      out += c;
      continue;
    }
    const e = body[++i];
    const short = Object.entries(GO_SHORT_ESCAPES).find(([, v]) => v === `\\${e}`);
    if (short) out += short[0];
    else if (e === '"' || e === '\\') out += e;
    else {
      const len = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
      const hex = body.slice(i + 1, i + 1 + len);
      if (len === 0 || !/^[0-9a-f]+$/i.test(hex) || hex.length !== len) return null;
      out += String.fromCodePoint(parseInt(hex, 16));
      i += len;
    }
  }
  return out;
}

// nftables layout (pkg/ip/ipmasq_nftables_linux.go, plugins v1.6.0+).
export const NFT_MASQ_TABLE = 'cni_plugins_masquerade';
export const NFT_MASQ_CHAIN = 'masq_checks';
export const NFT_POSTROUTING_CHAIN = 'postrouting';
export const NFT_MASQ_TABLE_COMMENT = 'Masquerading for plugins from github.com/containernetworking/plugins';
export const NFT_MASQ_CHAIN_COMMENT = 'Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet';
/** knftables.CommentLengthMax. */
export const NFT_COMMENT_MAX = 128;

export const nftNetworkHash = (network: string): string => formatHash(16, '', network);

/** The comment prefix that identifies one attachment's rules: hash(network)-hash(ifname:containerID). */
export function nftInstanceHash(network: string, ifname: string, containerId: string): string {
  return `${nftNetworkHash(network)}-${formatHash(16, '', `${ifname}:${containerId}`)}`;
}

/** commentForInstance: the hash, then a readable (quote-stripped, possibly truncated) description. */
export function nftMasqComment(network: string, ifname: string, containerId: string): string {
  const strip = (s: string) => s.replaceAll('"', '');
  const full = `${nftInstanceHash(network, ifname, containerId)}, net: ${strip(network)}, if: ${strip(ifname)}, id: ${strip(containerId)}`;
  return truncateUtf8(full, NFT_COMMENT_MAX);
}

/**
 * Go cuts at a byte count. It can split a character there, which no JSON string can
 * carry: twill drops the partial character (ASCII names, the normal case, are exact).
 */
export function truncateUtf8(s: string, maxBytes: number): string {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length <= maxBytes) return s;
  let end = maxBytes;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/** Reads nftMasqComment back; fields are null when truncated away. */
export function parseNftMasqComment(comment: string): { id: string; network: string | null; ifname: string | null; containerId: string | null } | null {
  const m = /^([0-9a-f]{16}-[0-9a-f]{16})(?:, net: (.*), if: (.*), id: (.*))?/su.exec(comment);
  if (!m) return null;
  const complete = Buffer.byteLength(comment, 'utf8') < NFT_COMMENT_MAX;
  return { id: m[1], network: m[2] ?? null, ifname: m[3] ?? null, containerId: complete ? (m[4] ?? null) : null };
}
