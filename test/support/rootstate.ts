// What the machine's root network namespace looks like, for a before/after
// comparison around the whole test run. Tests must never change any of it.
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

async function capture(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    return `<${cmd} ${args.join(' ')} failed: ${(e as Error).message.split('\n')[0]}>`;
  }
}

/** Fields that change on their own (timers) and say nothing about what a test did. */
const VOLATILE = new Set(['valid_life_time', 'preferred_life_time', 'expires', 'used', 'confirmed', 'updated']);

function stableJson(text: string): string[] {
  if (!text.trim() || text.startsWith('<')) return [text.trim()];
  const items = JSON.parse(text) as unknown[];
  return items.map((item) => JSON.stringify(item, (k, v: unknown) => (VOLATILE.has(k) ? undefined : v)));
}

function stableRules(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[]'));
}

export const WATCHED_SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/ipv6/conf/all/forwarding',
  'net/ipv4/conf/all/rp_filter',
  'net/ipv4/conf/default/rp_filter',
  'net/ipv4/conf/all/route_localnet',
  'net/ipv6/conf/all/accept_dad',
  'net/ipv6/conf/default/accept_dad',
  'net/bridge/bridge-nf-call-iptables',
  'net/bridge/bridge-nf-call-ip6tables',
];

/** The host's own CNI and flannel state, and twill's: tests use paths of their own. */
export const WATCHED_PATHS = ['/run/flannel', '/var/lib/cni', '/etc/cni', '/opt/cni/bin', '/var/lib/twill', '/run/twill'];

function listTree(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch {
    return [`${path} <absent>`];
  }
  if (!st.isDirectory()) return [`${path} ${st.size} ${st.mtimeMs}`];
  return [`${path}/`, ...readdirSync(path).sort().flatMap((n) => listTree(join(path, n)))];
}

export type RootState = Record<string, string[]>;

export async function captureRootState(): Promise<RootState> {
  const [links, addrs, routes4, routes6, rules, nft, iptNft, iptLegacy, ip6tNft] = await Promise.all([
    capture('ip', ['-j', 'link', 'show']),
    capture('ip', ['-j', 'addr', 'show']),
    capture('ip', ['-j', '-4', 'route', 'show', 'table', 'all']),
    capture('ip', ['-j', '-6', 'route', 'show', 'table', 'all']),
    capture('ip', ['-j', 'rule', 'show']),
    capture('nft', ['list', 'ruleset']),
    capture('iptables-nft-save', []),
    capture('iptables-legacy-save', []),
    capture('ip6tables-nft-save', []),
  ]);
  const sysctls = WATCHED_SYSCTLS.map((k) => {
    try {
      return `${k}=${readFileSync(`/proc/sys/${k}`, 'utf8').trim()}`;
    } catch {
      return `${k}=<absent>`;
    }
  });
  return {
    links: stableJson(links),
    addresses: stableJson(addrs),
    'routes (IPv4)': stableJson(routes4),
    'routes (IPv6)': stableJson(routes6),
    'policy rules': stableJson(rules),
    'nftables ruleset': stableRules(nft),
    'iptables (nft)': stableRules(iptNft),
    'iptables (legacy)': stableRules(iptLegacy),
    'ip6tables (nft)': stableRules(ip6tNft),
    sysctls,
    'host paths': WATCHED_PATHS.flatMap(listTree),
  };
}

/** Human-readable differences; empty when the root namespace is as it was. */
export function diffRootState(before: RootState, after: RootState): string[] {
  const out: string[] = [];
  for (const key of Object.keys(before)) {
    const a = new Set(before[key]);
    const b = new Set(after[key] ?? []);
    for (const line of a) if (!b.has(line)) out.push(`${key}: gone: ${line}`);
    for (const line of b) if (!a.has(line)) out.push(`${key}: new: ${line}`);
  }
  return out;
}
