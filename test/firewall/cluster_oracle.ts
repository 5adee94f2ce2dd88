// The oracle of the cluster-rules tests: what the tools themselves print (iptables-save,
// nft list), the rules flanneld v0.28.9 writes spelled out literally, and real traffic
// (ping, UDP datagrams sent and received by `node -e` inside the test hosts).
import { spawn } from 'node:child_process';
import type { TestHost } from '../support/hosts.js';

export type Variant = 'legacy' | 'nft';

/** One table of `ip[6]tables-<variant>-save`, without comments and counters ([] when the table is not there). */
export async function tableLines(h: TestHost, family: 4 | 6, variant: Variant, table: 'nat' | 'filter'): Promise<string[]> {
  const out = await h.exec(`${family === 4 ? 'iptables' : 'ip6tables'}-${variant}-save`, []);
  const lines: string[] = [];
  let inTable = false;
  for (const line of out.split('\n')) {
    if (line.startsWith('*')) inTable = line === `*${table}`;
    else if (inTable && line !== 'COMMIT' && line !== '' && !line.startsWith('#')) lines.push(line.replace(/ \[\d+:\d+\]$/, ''));
  }
  return lines;
}

/** Both tables of every variant and family: to compare a whole iptables state. */
export async function allIptables(h: TestHost): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const v of ['nft', 'legacy'] as const) {
    for (const f of [4, 6] as const) {
      for (const t of ['nat', 'filter'] as const) out[`${v}${f} ${t}`] = await tableLines(h, f, v, t);
    }
  }
  return out;
}

/** `nft list table <family> <name>` as trimmed lines; [] when there is no such table. */
export async function nftTableLines(h: TestHost, family: 'ip' | 'ip6', name: string): Promise<string[]> {
  const tables = await h.exec('nft', ['list', 'tables']);
  if (!tables.split('\n').includes(`table ${family} ${name}`)) return [];
  const out = await h.exec('nft', ['list', 'table', family, name]);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** `nft -j list ruleset` without handles and counters: to compare two rulesets object by object. */
export async function nftRuleset(h: TestHost): Promise<unknown[]> {
  const out = JSON.parse(await h.exec('nft', ['-j', 'list', 'ruleset'])) as { nftables: Record<string, unknown>[] };
  return out.nftables
    .filter((o) => !('metainfo' in o))
    .map((o) => JSON.parse(JSON.stringify(o, (k, v: unknown) => (k === 'handle' || k === 'packets' || k === 'bytes' ? undefined : v))) as unknown);
}

// flanneld v0.28.9's rules for cluster 10.244.0.0/16 + pod subnet 10.244.1.0/24 and
// cluster fd10::/56 + pod subnet fd10:0:0:1::/64, as iptables-save prints them.
export const C4 = '10.244.0.0/16';
export const P4 = '10.244.1.0/24';
export const C6 = 'fd10::/56';
export const P6 = 'fd10:0:0:1::/64';

export function flannelNat(cluster: string, pod: string, family: 4 | 6, randomFully = true): string[] {
  const m = '-m comment --comment "flanneld masq"';
  const rf = randomFully ? ' --random-fully' : '';
  return [
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${m} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${pod} -d ${cluster} ${m} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${cluster} -d ${pod} ${m} -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s ${cluster} -d ${pod} ${m} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${cluster} ! -d ${family === 4 ? '224.0.0.0/4' : 'ff00::/8'} ${m} -j MASQUERADE${rf}`,
    `-A FLANNEL-POSTRTG ! -s ${cluster} -d ${cluster} ${m} -j MASQUERADE${rf}`,
  ];
}

export function flannelFwd(cluster: string): string[] {
  return [
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    `-A FLANNEL-FWD -s ${cluster} -m comment --comment "flanneld forward" -j ACCEPT`,
    `-A FLANNEL-FWD -d ${cluster} -m comment --comment "flanneld forward" -j ACCEPT`,
  ];
}

export const NAT_BUILTIN = [':PREROUTING ACCEPT', ':INPUT ACCEPT', ':OUTPUT ACCEPT', ':POSTROUTING ACCEPT'];
export const filterBuiltin = (forward = 'ACCEPT') => [':INPUT ACCEPT', `:FORWARD ${forward}`, ':OUTPUT ACCEPT'];

/** twill's nft table (flanneld's layout; the two postrtg rules twill writes with the iptables mode's meaning). */
export function nftTable(family: 4 | 6, cluster: string, pod: string | null, randomFully = true): string[] {
  const p = family === 4 ? 'ip' : 'ip6';
  const masq = randomFully ? 'masquerade fully-random' : 'masquerade';
  return [
    `table ${p} flannel-ipv${family} {`,
    `comment "rules for flannel-ipv${family}"`,
    'chain forward {',
    'comment "chain to accept flannel traffic"',
    'type filter hook forward priority filter; policy accept;',
    `${p} saddr ${cluster} accept`,
    `${p} daddr ${cluster} accept`,
    '}',
    ...(pod === null
      ? []
      : [
          'chain postrtg {',
          'comment "chain to manage traffic masquerading by flannel"',
          'type nat hook postrouting priority srcnat; policy accept;',
          'meta mark & 0x00004000 == 0x00004000 return',
          `${p} saddr ${pod} ${p} daddr ${cluster} return`,
          `${p} saddr ${cluster} ${p} daddr ${pod} return`,
          `${p} saddr != ${cluster} ${p} daddr ${pod} return`,
          `${p} saddr ${cluster} ${p} daddr != ${family === 4 ? '224.0.0.0/4' : 'ff00::/8'} ${masq}`,
          `${p} saddr != ${cluster} ${p} daddr ${cluster} ${masq}`,
          '}',
        ]),
    '}',
  ];
}

/** Whether one ping gets an answer within a second. */
export async function pings(from: TestHost, to: string): Promise<boolean> {
  try {
    await from.exec('ping', ['-c', '1', '-W', '1', to]);
    return true;
  } catch {
    return false;
  }
}

const RECEIVE = `
const s = require('node:dgram').createSocket(process.argv[1]);
const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);
s.on('message', (_m, r) => { clearTimeout(t); console.log(r.address); process.exit(0); });
s.bind(Number(process.argv[2]), () => console.log('ready'));
`;
const SEND = `
const s = require('node:dgram').createSocket(process.argv[1]);
let n = 0;
const go = () => s.send('twill', Number(process.argv[3]), process.argv[2], () => { if (++n < 3) setTimeout(go, 100); else s.close(); });
go();
`;
let nextPort = 41000 + (process.pid % 1000) * 10;

/**
 * Sends UDP datagrams from one host to `dst` in another, and returns the source address
 * the receiver saw ('timeout' when nothing arrived): what NAT did, seen from the far end.
 */
export async function udpSource(from: TestHost, to: TestHost, dst: string): Promise<string> {
  const type = dst.includes(':') ? 'udp6' : 'udp4';
  const port = nextPort++;
  const rx = spawn('ip', ['netns', 'exec', to.name, process.execPath, '-e', RECEIVE, type, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const done = new Promise<void>((resolve) => rx.on('close', () => resolve()));
  rx.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    rx.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) resolve();
    });
    rx.on('close', () => reject(new Error(`UDP receiver in ${to.name} ended: ${out} ${err}`)));
  });
  await from.exec(process.execPath, ['-e', SEND, type, dst, String(port)]);
  await done;
  return out.replace('ready\n', '').trim();
}
