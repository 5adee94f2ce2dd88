// nftables through `nft -j`: the JSON goes as an argument, or as a file when it is
// too long for one (never stdin: nft opens /dev/stdin, which fails on the socketpair
// Node gives a child). One `nft` call is one kernel transaction.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isNotFound, type Netns } from '../kernel/index.js';
import { execChecked } from './exec.js';
import { FirewallError } from './types.js';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';

export interface NftTable {
  family: NftFamily;
  name: string;
  comment?: string;
}
export interface NftChain {
  family: NftFamily;
  table: string;
  name: string;
  type?: 'filter' | 'nat' | 'route';
  hook?: string;
  prio?: number;
  policy?: 'accept' | 'drop';
  comment?: string;
}
export interface NftRule {
  family: NftFamily;
  table: string;
  chain: string;
  handle?: number;
  comment?: string;
  expr: JsonValue[];
}

/** A rule named by its handle (to delete it). */
export interface NftRuleRef {
  family: NftFamily;
  table: string;
  chain: string;
  handle: number;
}

export type NftObject = { table: NftTable } | { chain: NftChain } | { rule: NftRule };
export type NftCommand = { add: NftObject } | { flush: NftObject } | { delete: NftObject | { rule: NftRuleRef } };

/** What `nft -j list table` returned: its chains, and each chain's rules in order. */
export interface NftListing {
  chains: NftChain[];
  rules: NftRule[];
}

// MAX_ARG_STRLEN is 128 KiB; stay well below it.
const ARG_MAX = 100_000;

/** A table, chain or rule not there (nft's message, or the kernel's ENOENT over netlink). */
export const isNftNotFound = (e: unknown): boolean => (e instanceof FirewallError && /No such file or directory/.test(e.stderr)) || isNotFound(e);

/**
 * One transaction in nft's own syntax (what JSON input cannot say, e.g. table
 * and chain comments): the script as an argument, or as a file when it is too
 * long for one (never stdin, which fails from Node).
 */
export async function runNftScript(netns: Netns | null, lines: string[], what: string): Promise<void> {
  if (lines.length === 0) return;
  const script = `${lines.join('\n')}\n`;
  if (script.length <= ARG_MAX) {
    await execChecked(what, 'nft', [script], { netns });
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'twill-nft-'));
  try {
    const file = join(dir, 'batch.nft');
    await writeFile(file, script, { mode: 0o600 });
    await execChecked(what, 'nft', ['-f', file], { netns });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs a read-then-write transaction again when another process deleted what it
 * read in between (nft answers "No such file or directory"); three tries.
 */
export async function retryOnNftRace(fn: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= 3 || !isNftNotFound(e)) throw e;
    }
  }
}

export class Nft {
  constructor(readonly netns: Netns | null) {}

  /** Runs the commands as one transaction. `viaFile` forces the file path (tests). */
  async run(commands: NftCommand[], what: string, viaFile = false): Promise<void> {
    if (commands.length === 0) return;
    const json = JSON.stringify({ nftables: commands });
    if (!viaFile && json.length <= ARG_MAX) {
      await execChecked(what, 'nft', ['-j', json], { netns: this.netns });
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'twill-nft-'));
    try {
      const file = join(dir, 'batch.json');
      await writeFile(file, json, { mode: 0o600 });
      await execChecked(what, 'nft', ['-j', '-f', file], { netns: this.netns });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** A table's chains and rules; null when the table does not exist. */
  async listTable(family: NftFamily, table: string): Promise<NftListing | null> {
    let stdout: string;
    try {
      stdout = (await execChecked(`list nftables table ${family} ${table}`, 'nft', ['-j', 'list', 'table', family, table], { netns: this.netns })).stdout;
    } catch (e) {
      if (isNftNotFound(e)) return null;
      throw e;
    }
    const items = (JSON.parse(stdout) as { nftables: Record<string, JsonValue>[] }).nftables;
    const listing: NftListing = { chains: [], rules: [] };
    for (const item of items) {
      if ('chain' in item) listing.chains.push(item.chain as unknown as NftChain);
      else if ('rule' in item) listing.rules.push(item.rule as unknown as NftRule);
    }
    return listing;
  }
}

/** Matches `<proto> <field> <op> <value>`, in the form `nft -j list` prints. */
export function payloadMatch(protocol: string, field: string, op: '==' | '!=', right: JsonValue): JsonValue {
  return { match: { op, left: { payload: { protocol, field } }, right } };
}

/** A prefix as nft prints it: a plain address when it covers the whole address. */
export function nftPrefix(addr: string, len: number, family: 4 | 6): JsonValue {
  return len === (family === 4 ? 32 : 128) ? addr : { prefix: { addr, len } };
}
