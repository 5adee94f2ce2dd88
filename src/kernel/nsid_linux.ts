import { AttrWriter, Attrs } from './nl/attr.js';
import * as C from './nl/constants.js';
import type { NsContext } from './context.js';
import type { Netns } from './netns.js';

/**
 * The id under which `target` is known in this namespace (what a veth's
 * IFLA_LINK_NETNSID refers to), or null when none is assigned.
 */
export async function getNetnsId(h: NsContext, target: Netns): Promise<number | null> {
  const ctx = { op: 'get id of', subject: `netns "${target.name}"` };
  const body = Buffer.concat([Buffer.alloc(4), new AttrWriter().u32(C.NETNSA_FD, target.fd).toBuffer()]);
  const msgs = await h.sock.request(C.RTM_GETNSID, 0, body, ctx);
  const reply = msgs.find((m) => m.type === C.RTM_NEWNSID);
  if (!reply) return null;
  const id = new Attrs(reply.data.subarray(4)).s32(C.NETNSA_NSID);
  return id === undefined || id === C.NETNSA_NSID_NOT_ASSIGNED ? null : id;
}
