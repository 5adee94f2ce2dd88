// host-local: addresses from local ranges, remembered on disk, compatible with
// the reference plugin's files and lock (both can serve one data dir at once).
import { CniError, ErrorCode } from '../../cni/errors.js';
import type { GcContext, Plugin, PluginContext } from '../../cni/plugin.js';
import { SUPPORTED_VERSIONS } from '../../cni/version.js';
import type { CniResult, IpConfig } from '../../cni/types.js';
import { formatAddr, type IpNum } from '../../ipam/addr.js';
import { AllocationError, IpAllocator } from '../../ipam/allocator.js';
import { loadHostLocalConfig } from '../../ipam/config.js';
import { readResolvConf } from '../../ipam/resolvconf.js';
import { DiskStore, type Owner } from '../../ipam/store.js';

const owner = (ctx: PluginContext): Owner => ({ containerId: ctx.cmd.containerId, ifname: ctx.cmd.ifname });

async function add(ctx: PluginContext): Promise<CniResult> {
  const cfg = loadHostLocalConfig(ctx.conf, ctx.cmd.args);
  const result: CniResult = { cniVersion: ctx.version };
  if (cfg.resolvConf) {
    try {
      result.dns = readResolvConf(cfg.resolvConf);
    } catch (e) {
      throw new CniError(ErrorCode.IoFailure, `cannot read ipam.resolvConf ${cfg.resolvConf}: ${(e as Error).message}`);
    }
  }
  const store = new DiskStore(cfg.dataDir, cfg.network);
  const me = owner(ctx);
  const pending = new Map<string, IpNum>(cfg.requested.map((ip) => [formatAddr(ip), ip]));
  const ips: IpConfig[] = [];
  await store.lock.with(() => {
    const taken: IpNum[] = [];
    try {
      cfg.rangeSets.forEach((set, idx) => {
        let requested: IpNum | null = null;
        for (const [key, ip] of pending) {
          if (set.contains(ip)) {
            requested = ip;
            pending.delete(key);
            break;
          }
        }
        let got;
        try {
          got = new IpAllocator(set, store, idx).allocate(me, requested);
        } catch (e) {
          if (e instanceof AllocationError) throw new CniError(ErrorCode.Internal, `failed to allocate for range ${idx}: ${e.message}`);
          throw e;
        }
        taken.push(got.ip);
        ips.push(got.gateway ? { address: got.address, gateway: formatAddr(got.gateway) } : { address: got.address });
      });
      if (pending.size) throw new CniError(ErrorCode.Internal, `failed to allocate all requested IPs: ${[...pending.keys()].join(' ')}`);
    } catch (e) {
      // Nothing half-done is left: every address this ADD took goes back.
      for (const ip of taken) store.removeFile(formatAddr(ip));
      throw e;
    }
  });
  result.ips = ips;
  if (cfg.routes.length) result.routes = cfg.routes;
  return result;
}

async function del(ctx: PluginContext): Promise<void> {
  const cfg = loadHostLocalConfig(ctx.conf, ctx.cmd.args);
  const store = new DiskStore(cfg.dataDir, cfg.network);
  await store.lock.with(() => store.releaseByOwner(owner(ctx)));
}

async function check(ctx: PluginContext): Promise<void> {
  const cfg = loadHostLocalConfig(ctx.conf, ctx.cmd.args);
  const store = new DiskStore(cfg.dataDir, cfg.network);
  const found = await store.lock.with(() => store.findByOwner(owner(ctx)));
  if (found.length === 0) {
    throw new CniError(ErrorCode.Internal, `host-local: failed to find an address of container ${ctx.cmd.containerId} (interface ${ctx.cmd.ifname}) in ${store.dir}`);
  }
}

/**
 * Releases every address whose owner the runtime no longer lists. The reference
 * does nothing on GC yet. The whole pass holds the store's lock, which every
 * ADD takes to reserve: an ADD that started after the GC began cannot have
 * reserved yet, so it is never released.
 */
async function gc(ctx: GcContext): Promise<void> {
  const cfg = loadHostLocalConfig(ctx.conf, ctx.cmd.args);
  const store = new DiskStore(cfg.dataDir, cfg.network);
  const valid = new Set(ctx.validAttachments.map((a) => `${a.containerId}\n${a.ifname}`));
  await store.lock.with(() => {
    for (const a of store.list()) {
      if (!valid.has(`${a.containerId}\n${a.ifname}`)) store.removeFile(a.file);
    }
  });
}

async function status(ctx: PluginContext): Promise<void> {
  const cfg = loadHostLocalConfig(ctx.conf, ctx.cmd.args);
  try {
    new DiskStore(cfg.dataDir, cfg.network);
  } catch (e) {
    throw new CniError(ErrorCode.PluginNotAvailable, `host-local cannot use its data dir ${cfg.dataDir}: ${(e as Error).message}`);
  }
}

export const hostLocal: Plugin = { type: 'host-local', versions: SUPPORTED_VERSIONS, add, del, check, gc, status };
