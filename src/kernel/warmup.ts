// The codecs of the messages a CNI ADD sends and reads (link, address, route),
// run on made-up messages while the SEA's startup snapshot is taken: what V8
// compiles for them then ships in the snapshot, instead of being compiled at
// every plugin start. No socket, no namespace: nothing is sent.
import { ifinfomsg, parseLink } from './link_linux.js';
import { parseAddr } from './addr_linux.js';
import { parseRoute } from './route_linux.js';
import { formatIp, formatMac, parseCidr, parseIp, parseMac } from './ip.js';
import { AttrWriter } from './nl/attr.js';
import type { ErrorContext } from './errors.js';
import * as C from './nl/constants.js';

const ctx: ErrorContext = { op: 'warm up', subject: 'made-up message' };

function header(bytes: number[]): Buffer {
  return Buffer.from(bytes);
}

export function warmUpKernelCodecs(): void {
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
  parseLink({ type: C.RTM_NEWLINK, flags: 0, data: Buffer.concat([ifinfomsg(5, 0x1043), link]) }, 'warm');

  for (const [family, ip, len] of [[C.AF_INET, '10.244.1.2', 24], [C.AF_INET6, 'fd00::2', 64]] as const) {
    const bytes = parseIp(ip, ctx).bytes;
    const addr = new AttrWriter().raw(C.IFA_ADDRESS, bytes).raw(C.IFA_LOCAL, bytes).toBuffer();
    parseAddr({ type: C.RTM_NEWADDR, flags: 0, data: Buffer.concat([header([family, len, 0, 0, 5, 0, 0, 0]), addr]) }, 'warm');
    const route = new AttrWriter().raw(C.RTA_DST, bytes).u32(C.RTA_OIF, 5).toBuffer();
    parseRoute({ type: C.RTM_NEWROUTE, flags: 0, data: Buffer.concat([header([family, len, 0, 0, 254, 3, 253, 1, 0, 0, 0, 0]), route]) }, 'warm');
  }
}
