// flannel: the CNI plugin of a flannel network. It turns the node's subnet.env
// into a delegate config (bridge + host-local by default), remembers it per
// container, and lets the delegate do the work; DEL replays what ADD used.
import { mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode, invalidConfig } from '../../cni/errors.js';
import { delegateAdd, delegateCheck, delegateDel, delegateGc, delegateStatus } from '../../cni/delegate.js';
import type { GcContext, Plugin, PluginContext } from '../../cni/plugin.js';
import type { CniResult, NetConf } from '../../cni/types.js';
import { SUPPORTED_VERSIONS } from '../../cni/version.js';
import { parseCidr, formatAddr, networkOf } from '../../ipam/addr.js';
import { DEFAULT_SUBNET_FILE, SubnetEnvError, parseSubnetEnv, readSubnetEnv, type SubnetEnv } from '../../subnet/subnet-env.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface FlannelConfig {
  subnetFile: string;
  dataDir: string;
  delegate: Json;
  ipam: Json;
}

function loadConfig(conf: NetConf): FlannelConfig {
  const str = (key: string, fallback: string): string => {
    const v = conf[key];
    if (v === undefined || v === '') return fallback;
    if (typeof v !== 'string' || !v.startsWith('/')) throw invalidConfig(`"${key}" must be an absolute path, got ${JSON.stringify(v)}`);
    return v;
  };
  const delegate = conf.delegate ?? {};
  if (!isObject(delegate)) throw invalidConfig(`"delegate" must be an object, got ${JSON.stringify(delegate)}`);
  if ('type' in delegate && typeof delegate.type !== 'string') throw invalidConfig("'delegate' dictionary, if present, must have (string) 'type' field");
  if ('name' in delegate) throw invalidConfig("'delegate' dictionary must not have 'name' field, it'll be set by flannel");
  if ('ipam' in delegate) throw invalidConfig("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel");
  const ipam = conf.ipam ?? {};
  if (!isObject(ipam)) throw invalidConfig(`"ipam" must be an object, got ${JSON.stringify(ipam)}`);
  return { subnetFile: str('subnetFile', DEFAULT_SUBNET_FILE), dataDir: str('dataDir', DEFAULT_DATA_DIR), delegate: { ...delegate }, ipam: { ...ipam } };
}

function subnetEnv(cfg: FlannelConfig): SubnetEnv {
  try {
    return readSubnetEnv(cfg.subnetFile);
  } catch (e) {
    if (e instanceof SubnetEnvError) throw new CniError(ErrorCode.Internal, e.message);
    throw e;
  }
}

/** "10.244.1.1/24" → "10.244.1.0/24": host-local refuses host bits. */
function networkText(cidr: string, key: string): string {
  const c = parseCidr(cidr);
  if (!c) throw new CniError(ErrorCode.Internal, `subnet.env: ${key} ${JSON.stringify(cidr)} is not a CIDR`);
  return `${formatAddr({ family: c.ip.family, value: networkOf(c) })}/${c.prefix}`;
}

/** The delegate's config, built as flannel builds it. */
function buildDelegate(conf: NetConf, cfg: FlannelConfig, env: SubnetEnv): Json {
  const d: Json = { ...cfg.delegate, name: conf.name };
  if (!('type' in d)) d.type = 'bridge';
  // flannel masquerades itself when FLANNEL_IPMASQ is true; otherwise the bridge must.
  if (!('ipMasq' in d)) d.ipMasq = !env.ipMasq;
  if (!('mtu' in d)) d.mtu = env.mtu;
  if (d.type === 'bridge' && !('isGateway' in d)) d.isGateway = true;
  if (conf.cniVersion) d.cniVersion = conf.cniVersion;
  const ranges: Json[][] = [];
  if (env.subnet) ranges.push([{ subnet: networkText(env.subnet, 'FLANNEL_SUBNET') }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: networkText(env.ipv6Subnet, 'FLANNEL_IPV6_SUBNET') }]);
  const userRoutes = cfg.ipam.routes === undefined ? [] : cfg.ipam.routes;
  if (!Array.isArray(userRoutes)) throw invalidConfig('"ipam.routes" must be a list');
  d.ipam = {
    ...cfg.ipam,
    type: typeof cfg.ipam.type === 'string' ? cfg.ipam.type : 'host-local',
    ranges,
    routes: [...userRoutes, ...env.networks.map((dst) => ({ dst })), ...env.ipv6Networks.map((dst) => ({ dst }))],
  };
  if (isObject(conf.runtimeConfig)) d.runtimeConfig = conf.runtimeConfig;
  return d;
}

const scratchPath = (cfg: FlannelConfig, containerId: string) => join(cfg.dataDir, containerId);

/** JSON with object keys sorted, as Go's json.Marshal writes a map: the saved file is byte-identical to flannel's. */
function goJson(v: unknown): string {
  return JSON.stringify(v, (_k, value: unknown) =>
    isObject(value) ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, value[k]])) : value,
  );
}

function delegateType(d: Json): string {
  return typeof d.type === 'string' ? d.type : 'bridge';
}

/** The delegate config, as the bytes ADD saves and hands on. */
export function delegateConfig(conf: NetConf, cfg: FlannelConfig, env: SubnetEnv): { delegate: Json; bytes: Buffer } {
  const delegate = buildDelegate(conf, cfg, env);
  return { delegate, bytes: Buffer.from(goJson(delegate)) };
}

/** What ADD computes before it touches anything, on a made-up config (for the SEA's startup snapshot). */
export function warmUpFlannel(conf: NetConf, subnetEnvText: string): Buffer {
  return delegateConfig(conf, loadConfig(conf), parseSubnetEnv(subnetEnvText, 'subnet.env')).bytes;
}

async function add(ctx: PluginContext): Promise<CniResult> {
  const cfg = loadConfig(ctx.conf);
  const { delegate, bytes } = delegateConfig(ctx.conf, cfg, subnetEnv(cfg));
  // Saved before delegating, so that a DEL after a crash still knows what to undo.
  mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
  const path = scratchPath(cfg, ctx.cmd.containerId);
  writeFileSync(path, bytes, { mode: 0o600 });
  try {
    return await delegateAdd(delegateType(delegate), ctx.cmd, bytes);
  } catch (e) {
    // The delegate undid its own work; nothing is left to replay.
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
    throw e;
  }
}

function readScratch(cfg: FlannelConfig, containerId: string): Buffer | null {
  try {
    return readFileSync(scratchPath(cfg, containerId));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function parseScratch(bytes: Buffer, path: string): Json {
  try {
    const d: unknown = JSON.parse(bytes.toString('utf8'));
    if (isObject(d)) return d;
  } catch {
    // reported below
  }
  throw new CniError(ErrorCode.DecodingFailure, `failed to parse the saved delegate config ${path}`);
}

async function del(ctx: PluginContext): Promise<void> {
  const cfg = loadConfig(ctx.conf);
  const path = scratchPath(cfg, ctx.cmd.containerId);
  const bytes = readScratch(cfg, ctx.cmd.containerId);
  // Nothing saved: never added, or already deleted. The spec asks DEL to succeed.
  if (!bytes) return;
  const delegate = parseScratch(bytes, path);
  await delegateDel(delegateType(delegate), ctx.cmd, bytes);
  // Removed only once the delegate succeeded: a failed DEL can be retried.
  unlinkSync(path);
}

/** Better than flannel's no-op: the delegate checks what ADD made. */
async function check(ctx: PluginContext): Promise<void> {
  const cfg = loadConfig(ctx.conf);
  const path = scratchPath(cfg, ctx.cmd.containerId);
  const bytes = readScratch(cfg, ctx.cmd.containerId);
  if (!bytes) throw new CniError(ErrorCode.Internal, `flannel: no attachment of container ${ctx.cmd.containerId} (no ${path})`);
  const delegate = { ...parseScratch(bytes, path), prevResult: ctx.conf.prevResult, cniVersion: ctx.conf.cniVersion };
  const stdin = Buffer.from(JSON.stringify(delegate));
  await delegateCheck(delegateType(delegate), ctx.cmd, stdin);
}

/** The delegate collects with today's config; saved configs of containers the runtime no longer lists go. */
async function gc(ctx: GcContext): Promise<void> {
  const cfg = loadConfig(ctx.conf);
  const delegate = { ...buildDelegate(ctx.conf, cfg, subnetEnv(cfg)), 'cni.dev/valid-attachments': ctx.conf['cni.dev/valid-attachments'] ?? [] };
  const stdin = Buffer.from(JSON.stringify(delegate));
  await delegateGc(delegateType(delegate), ctx.cmd, stdin);
  const valid = new Set(ctx.validAttachments.map((a) => a.containerId));
  let saved: string[] = [];
  try {
    saved = readdirSync(cfg.dataDir);
  } catch {
    return;
  }
  for (const id of saved) if (!valid.has(id) && /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(id)) unlinkSync(join(cfg.dataDir, id));
}

async function status(ctx: PluginContext): Promise<void> {
  const cfg = loadConfig(ctx.conf);
  let env: SubnetEnv;
  try {
    env = readSubnetEnv(cfg.subnetFile);
  } catch (e) {
    throw new CniError(ErrorCode.PluginNotAvailable, (e as Error).message);
  }
  const delegate = buildDelegate(ctx.conf, cfg, env);
  const stdin = Buffer.from(JSON.stringify(delegate));
  await delegateStatus(delegateType(delegate), ctx.cmd, stdin);
}

export const flannel: Plugin = { type: 'flannel', versions: SUPPORTED_VERSIONS, add, del, check, gc, status };
