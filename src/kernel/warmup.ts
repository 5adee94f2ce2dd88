// The codecs of the messages a short-lived process sends and reads (links,
// addresses, routes, an nftables table), run on made-up messages while the
// SEA's startup snapshot is taken: what V8 compiles for them then ships in the
// snapshot instead of being compiled at every start. No socket, no namespace:
// nothing is sent.
import { ifinfomsg, parseLink } from './link_linux.js';
import { parseAddr } from './addr_linux.js';
import { parseRoute } from './route_linux.js';
import { summarizeNftTable } from './nftables_linux.js';
import { formatIp, formatMac, parseCidr, parseIp, parseMac } from './ip.js';
import { AttrWriter } from './nl/attr.js';
import type { ErrorContext } from './errors.js';
import * as C from './nl/constants.js';
import type { Message } from './nl/socket.js';
import { formatMessage, parseError, parseMessages } from 'netlink/dist/structs.js';

const ctx: ErrorContext = { op: 'warm up', subject: 'made-up message' };

function header(bytes: number[]): Buffer {
  return Buffer.from(bytes);
}

const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
};

/** A hooked chain and a rule with a comment and a jump, as the kernel dumps them. */
function nftMessages(): { chains: Message[]; rules: Message[] } {
  const nfgen = Buffer.from([2, 0, 0, 0]);
  const chain = new AttrWriter()
    .string(1, 'cni_hostport')
    .string(3, 'prerouting')
    .nested(4, (w) => w.raw(1, be32(0)).raw(2, be32(-100)))
    .string(7, 'nat')
    .toBuffer();
  const handle = Buffer.alloc(8);
  handle.writeBigUInt64BE(7n);
  const comment = Buffer.from([0, 5, ...Buffer.from('warm'), 0]);
  const rule = new AttrWriter()
    .string(1, 'cni_hostport')
    .string(2, 'prerouting')
    .raw(3, handle)
    .nested(4, (list) =>
      list
        .nested(1, (e) => e.string(1, 'fib'))
        .nested(1, (e) => e.string(1, 'cmp'))
        .nested(1, (e) => e.string(1, 'immediate').nested(2, (d) => d.raw(1, be32(0)).nested(2, (v) => v.nested(2, (x) => x.raw(1, be32(-3)).string(2, 'hostports_all'))))),
    )
    .raw(7, comment)
    .toBuffer();
  return { chains: [{ type: 0, flags: 0, data: Buffer.concat([nfgen, chain]) }], rules: [{ type: 0, flags: 0, data: Buffer.concat([nfgen, rule]) }] };
}

/** The netlink package's own framing: a reply datagram (a message, then an ACK) formatted and parsed. */
function warmUpFraming(payload: Buffer): void {
  const ack = Buffer.alloc(20);
  const parts = [
    ...formatMessage({ type: C.RTM_NEWLINK, flags: 0, seq: 1, port: 0, data: payload }),
    ...formatMessage({ type: C.NLMSG_ERROR, flags: 0x100, seq: 1, port: 0, data: ack }),
  ];
  for (const m of parseMessages(Buffer.concat(parts))) if (m.type === C.NLMSG_ERROR) parseError(m.data, m.flags);
}

export function warmUpKernelCodecs(): void {
  const nft = nftMessages();
  const summary = summarizeNftTable('cni_hostport', 'ip', nft.chains, nft.rules);
  if (summary.rules[0]?.jumps[0] !== 'hostports_all' || summary.rules[0].comment !== 'warm' || summary.chains[0]?.hook !== 'prerouting') {
    throw new Error(`nftables warm-up read back ${JSON.stringify(summary)}`);
  }

  for (const text of ['10.244.1.2', 'fd00::2', '198.18.0.1', 'fe80::1']) formatIp(parseIp(text, ctx).bytes);
  for (const text of ['10.244.0.0/16', 'fd00::/64']) parseCidr(text, ctx);
  formatMac(parseMac('0a:58:0a:f4:01:02', ctx));

  const mac = parseMac('0a:58:0a:f4:01:02', ctx);
  const link = new AttrWriter()
    .string(C.IFLA_IFNAME, 'veth0a1b2c3d')
    .raw(C.IFLA_ADDRESS, mac)
    .u32(C.IFLA_MTU, 1450)
    .u8(C.IFLA_OPERSTATE, 6)
    .u32(C.IFLA_MASTER, 3)
    .nested(C.IFLA_LINKINFO, (w) => w.string(C.IFLA_INFO_KIND, 'veth'))
    .toBuffer();
  const linkMsg = Buffer.concat([ifinfomsg(5, 0x1043), link]);
  parseLink({ type: C.RTM_NEWLINK, flags: 0, data: linkMsg }, 'warm');
  warmUpFraming(linkMsg);

  for (const [family, ip, len] of [[C.AF_INET, '10.244.1.2', 24], [C.AF_INET6, 'fd00::2', 64]] as const) {
    const bytes = parseIp(ip, ctx).bytes;
    const addr = new AttrWriter().raw(C.IFA_ADDRESS, bytes).raw(C.IFA_LOCAL, bytes).toBuffer();
    parseAddr({ type: C.RTM_NEWADDR, flags: 0, data: Buffer.concat([header([family, len, 0, 0, 5, 0, 0, 0]), addr]) }, 'warm');
    const route = new AttrWriter().raw(C.RTA_DST, bytes).u32(C.RTA_OIF, 5).toBuffer();
    parseRoute({ type: C.RTM_NEWROUTE, flags: 0, data: Buffer.concat([header([family, len, 0, 0, 254, 3, 253, 1, 0, 0, 0, 0]), route]) }, 'warm');
  }
}
