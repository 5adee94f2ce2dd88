// flannel's subnet.env: what the node agent tells the CNI plugin about this
// node's share of the cluster network. Read by the flannel plugin, written by
// the agent; the format and key order are flannel's.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetEnv {
  /** FLANNEL_NETWORK: the cluster network(s) (a comma-separated list is allowed). */
  networks: string[];
  /** FLANNEL_SUBNET: this node's subnet, as written (gateway address + prefix, e.g. 10.244.1.1/24). */
  subnet: string | null;
  ipv6Networks: string[];
  ipv6Subnet: string | null;
  mtu: number | null;
  ipMasq: boolean | null;
}

export class SubnetEnvError extends Error {
  constructor(message: string, readonly missing: string[] = []) {
    super(message);
  }
}

/** Keys a usable file must have: at least one family's network and subnet, the MTU and FLANNEL_IPMASQ. */
export function missingKeys(env: SubnetEnv): string[] {
  const m: string[] = [];
  if (env.networks.length === 0 && env.ipv6Networks.length === 0) m.push('FLANNEL_NETWORK', 'FLANNEL_IPV6_NETWORK');
  if (env.subnet === null && env.ipv6Subnet === null) m.push('FLANNEL_SUBNET', 'FLANNEL_IPV6_SUBNET');
  if (env.mtu === null) m.push('FLANNEL_MTU');
  if (env.ipMasq === null) m.push('FLANNEL_IPMASQ');
  return m;
}

export function parseSubnetEnv(text: string, path: string): SubnetEnv {
  const env: SubnetEnv = { networks: [], subnet: null, ipv6Networks: [], ipv6Subnet: null, mtu: null, ipMasq: null };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    switch (key) {
      case 'FLANNEL_NETWORK':
        env.networks = value.split(',').map((v) => v.trim()).filter(Boolean);
        break;
      case 'FLANNEL_SUBNET':
        env.subnet = value || null;
        break;
      case 'FLANNEL_IPV6_NETWORK':
        env.ipv6Networks = value.split(',').map((v) => v.trim()).filter(Boolean);
        break;
      case 'FLANNEL_IPV6_SUBNET':
        env.ipv6Subnet = value || null;
        break;
      case 'FLANNEL_MTU': {
        const mtu = Number(value);
        if (!/^\d+$/.test(value) || mtu < 68 || mtu > 65535) throw new SubnetEnvError(`${path}: FLANNEL_MTU ${JSON.stringify(value)} is not an MTU (68 to 65535)`);
        env.mtu = mtu;
        break;
      }
      case 'FLANNEL_IPMASQ':
        env.ipMasq = value === 'true';
        break;
    }
  }
  return env;
}

/** Reads and checks the file; errors name the file, what is missing, and what that means. */
export function readSubnetEnv(path: string): SubnetEnv {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SubnetEnvError(
      `failed to load flannel 'subnet.env' file ${path}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}. ` +
        'The node agent (twill agent or flanneld) writes it once it has a subnet lease: it is not running or not ready on this node; check its log.',
    );
  }
  const env = parseSubnetEnv(text, path);
  const missing = missingKeys(env);
  if (missing.length) {
    throw new SubnetEnvError(`${path} is missing ${missing.join(', ')}: the node agent has not finished writing it, or it was not written by a flannel-compatible agent`, missing);
  }
  return env;
}

/** The file as flannel writes it: only the lines that apply, in flannel's order. */
export function formatSubnetEnv(env: SubnetEnv): string {
  const lines: string[] = [];
  if (env.networks.length) lines.push(`FLANNEL_NETWORK=${env.networks.join(',')}`);
  if (env.subnet) lines.push(`FLANNEL_SUBNET=${env.subnet}`);
  if (env.ipv6Networks.length) lines.push(`FLANNEL_IPV6_NETWORK=${env.ipv6Networks.join(',')}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_SUBNET=${env.ipv6Subnet}`);
  if (env.mtu !== null) lines.push(`FLANNEL_MTU=${env.mtu}`);
  if (env.ipMasq !== null) lines.push(`FLANNEL_IPMASQ=${env.ipMasq}`);
  return `${lines.join('\n')}\n`;
}

/** Written atomically (temp file + rename, 0644): a plugin never reads half a file. */
export function writeSubnetEnv(path: string, env: SubnetEnv): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, formatSubnetEnv(env));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
