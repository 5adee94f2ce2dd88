// loopback: bring up `lo` in the container's namespace.
import { Handle, openNetns, isNotFound } from '../../kernel/index.js';
import { CniError, ErrorCode } from '../../cni/errors.js';
import type { Plugin, PluginContext } from '../../cni/plugin.js';
import { SUPPORTED_VERSIONS } from '../../cni/version.js';
import type { CniResult } from '../../cni/types.js';
import { parseResult } from '../../cni/result.js';
import { withContainerNetns } from '../common/netns.js';

async function add(ctx: PluginContext): Promise<CniResult> {
  const addrs = await withContainerNetns(ctx.cmd.netns, async (h) => {
    await h.setLinkUp('lo');
    return h.listAddrs({ link: 'lo' });
  });
  // Chained after another plugin, loopback passes its result through.
  if (ctx.conf.prevResult !== undefined) return parseResult(ctx.conf.prevResult, 'prevResult');
  const v4 = addrs.find((a) => a.family === 4);
  const v6 = addrs.find((a) => a.family === 6);
  const result: CniResult = { cniVersion: ctx.version, interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: ctx.cmd.netns }] };
  const ips = [v4, v6].filter((a) => a !== undefined).map((a) => ({ interface: 0, address: `${a.address}/${a.prefixLen}` }));
  if (ips.length) result.ips = ips;
  return result;
}

async function del(ctx: PluginContext): Promise<void> {
  if (!ctx.cmd.netns) return;
  let netns;
  try {
    netns = openNetns(ctx.cmd.netns);
  } catch (e) {
    if (isNotFound(e)) return; // the namespace is gone, and lo with it
    throw e;
  }
  const h = Handle.open(netns);
  try {
    await h.setLinkDown('lo');
  } finally {
    h.close();
    netns.close();
  }
}

async function check(ctx: PluginContext): Promise<void> {
  await withContainerNetns(ctx.cmd.netns, async (h) => {
    const lo = await h.getLink('lo');
    if (!lo.up) throw new CniError(ErrorCode.Internal, `loopback interface is down in ${ctx.cmd.netns}`);
  });
}

export const loopback: Plugin = { type: 'loopback', versions: SUPPORTED_VERSIONS, add, del, check };
