// What the tools themselves say is in a test host's firewall: the oracle the
// firewall tests check twill against (never twill's own parser).
import type { TestHost } from '../support/hosts.js';

export type Variant = 'legacy' | 'nft';

/** The nat table as `ip[6]tables-<variant>-save` prints it, without comments and counters. */
export async function natLines(h: TestHost, family: 4 | 6, variant: Variant = 'nft'): Promise<string[]> {
  const out = await h.exec(`${family === 4 ? 'iptables' : 'ip6tables'}-${variant}-save`, []);
  const lines: string[] = [];
  let inNat = false;
  for (const line of out.split('\n')) {
    if (line.startsWith('*')) inNat = line === '*nat';
    else if (inNat && line !== 'COMMIT' && line !== '' && !line.startsWith('#')) lines.push(line.replace(/ \[\d+:\d+\]$/, ''));
  }
  return lines;
}

/** Only the nat lines that mention `text` (a chain name, a comment). */
export async function natLinesWith(h: TestHost, family: 4 | 6, text: string, variant: Variant = 'nft'): Promise<string[]> {
  return (await natLines(h, family, variant)).filter((l) => l.includes(text));
}

/**
 * `nft list table inet cni_plugins_masquerade` as lines, or [] without the table.
 * Table and chain comments are left out: nft 1.0.6 cannot set them through JSON
 * (see the firewall notes), the reference sets them through nft's text syntax.
 */
export async function nftMasqLines(h: TestHost): Promise<string[]> {
  const tables = await h.exec('nft', ['list', 'tables']);
  if (!tables.includes('table inet cni_plugins_masquerade')) return [];
  const out = await h.exec('nft', ['list', 'table', 'inet', 'cni_plugins_masquerade']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^comment "/.test(l));
}

/** `nft -j list ruleset` with handles removed: to compare two rulesets object by object. */
export async function nftRulesetJson(h: TestHost): Promise<unknown[]> {
  const out = JSON.parse(await h.exec('nft', ['-j', 'list', 'ruleset'])) as { nftables: Record<string, Record<string, unknown>>[] };
  return out.nftables
    .filter((o) => !('metainfo' in o))
    .map((o) => JSON.parse(JSON.stringify(o, (k, v: unknown) => (k === 'handle' || k === 'packets' || k === 'bytes' ? undefined : v))) as unknown);
}

/** The expected nft listing of the masquerade table holding these rule lines. */
export function nftMasqTable(rules: string[]): string[] {
  return [
    'table inet cni_plugins_masquerade {',
    'chain masq_checks {',
    ...rules,
    '}',
    'chain postrouting {',
    'type nat hook postrouting priority srcnat; policy accept;',
    'ip daddr 224.0.0.0/4 return',
    'ip6 daddr ff00::/8 return',
    'goto masq_checks',
    '}',
    '}',
  ];
}
