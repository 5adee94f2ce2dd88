// iptables through iptables-save / iptables-restore: read a table, plan the
// difference to what twill wants, apply it as one `iptables-restore -w --noflush`
// batch (atomic per table, also with the legacy variant: it commits the table whole).
import ipaddr from 'ipaddr.js';
import type { Netns } from '../kernel/index.js';
import { execChecked } from './exec.js';
import { FirewallError, type IpFamily, type IptablesVariant } from './types.js';

/** A rule's arguments after `-A CHAIN`, as iptables-save prints them (comments unquoted). */
export type Rule = readonly string[];

export interface SavedChain {
  /** Built-in chains have a policy; user chains '-'. */
  policy: string;
  rules: Rule[];
}

/** One table of iptables-save output: chains in order, with their rules. */
export type SavedTable = Map<string, SavedChain>;
export type SavedRuleset = Map<string, SavedTable>;

/**
 * Splits a rule line as iptables-restore does (xshared.c add_param_to_argv):
 * blanks separate, double quotes group, a backslash inside quotes escapes.
 */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      has = true;
    } else if (c === ' ' || c === '\t') {
      if (has) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (quoted) throw new Error(`unterminated quote in iptables rule: ${line}`);
  if (has) out.push(cur);
  return out;
}

/** Quotes an argument for an iptables-restore line when it needs it. */
export function quoteArg(arg: string): string {
  if (/[\n\r\0]/.test(arg)) throw new FirewallError(`an iptables argument cannot contain a line break or NUL: ${JSON.stringify(arg)}`);
  if (arg !== '' && /^[\w.:/!+=,@%-]+$/.test(arg)) return arg;
  return `"${arg.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

export const renderRule = (chain: string, rule: Rule, op: '-A' | '-D' = '-A'): string => [op, chain, ...rule].map(quoteArg).join(' ');

export function parseSave(text: string): SavedRuleset {
  const tables: SavedRuleset = new Map();
  let table: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line === 'COMMIT') continue;
    if (line.startsWith('*')) {
      table = new Map();
      tables.set(line.slice(1), table);
    } else if (line.startsWith(':') && table) {
      const [name, policy] = line.slice(1).split(' ');
      table.set(name, { policy: policy ?? '-', rules: [] });
    } else if (line.startsWith('-A ') && table) {
      const [, chain, ...rule] = tokenize(line);
      const c = table.get(chain) ?? { policy: '-', rules: [] };
      table.set(chain, c);
      c.rules.push(rule);
    }
  }
  return tables;
}

/** Address arguments compared by value (iptables prints them canonical; twill may not). */
function canonicalArg(arg: string): string {
  if (!/^[0-9a-fA-F.:]+(\/\d+)?$/.test(arg) || !/[.:]/.test(arg)) return arg;
  try {
    if (arg.includes('/')) {
      const [addr, len] = ipaddr.parseCIDR(arg);
      return `${addr.toString()}/${len}`;
    }
    return ipaddr.parse(arg).toString();
  } catch {
    return arg;
  }
}

export const sameRule = (a: Rule, b: Rule): boolean => a.length === b.length && a.every((x, i) => canonicalArg(x) === canonicalArg(b[i]));

/** The chain a rule jumps or goes to, if any. */
export function ruleTarget(rule: Rule): string | null {
  for (let i = 0; i < rule.length - 1; i++) if (rule[i] === '-j' || rule[i] === '-g') return rule[i + 1];
  return null;
}

/** The value of `--comment`, if the rule has one. */
export function ruleComment(rule: Rule): string | null {
  const i = rule.indexOf('--comment');
  return i >= 0 && i + 1 < rule.length ? rule[i + 1] : null;
}

export interface RuleAt {
  chain: string;
  rule: Rule;
}

/**
 * What twill wants in one table. Chains it owns are written whole; rules it adds to
 * chains others own (a jump from POSTROUTING) are added once and removed by match.
 */
export interface IptablesChange {
  table: string;
  /** Owned chains: created if missing, then holding exactly these rules, in order. */
  setChains?: { name: string; rules: Rule[] }[];
  /** Rules in shared chains: appended when missing. */
  ensureRules?: RuleAt[];
  /** Existing rules to delete (those also in ensureRules stay). */
  removeRules?: (r: RuleAt) => boolean;
  /** Owned chains to delete, with every rule in the table that jumps to them. */
  deleteChains?: string[];
}

/** The iptables-restore input that turns `current` into what `change` asks; [] when nothing differs. */
export function planChange(current: SavedRuleset, change: IptablesChange): string[] {
  const table = current.get(change.table) ?? new Map<string, SavedChain>();
  const lines: string[] = [];
  const existing: RuleAt[] = [...table].flatMap(([chain, c]) => c.rules.map((rule) => ({ chain, rule })));
  const ensured = change.ensureRules ?? [];
  const doomed = new Set(change.deleteChains ?? []);
  const isEnsured = (r: RuleAt) => ensured.some((e) => e.chain === r.chain && sameRule(e.rule, r.rule));

  // Deletions first: a chain can only go once nothing jumps to it.
  for (const r of existing) {
    if (doomed.has(r.chain)) continue;
    const target = ruleTarget(r.rule);
    if ((target !== null && doomed.has(target)) || (change.removeRules?.(r) && !isEnsured(r))) lines.push(renderRule(r.chain, r.rule, '-D'));
  }
  for (const name of doomed) {
    if (!table.has(name)) continue;
    lines.push(`-F ${quoteArg(name)}`, `-X ${quoteArg(name)}`);
  }
  for (const { name, rules } of change.setChains ?? []) {
    const have = table.get(name);
    if (have && have.rules.length === rules.length && have.rules.every((r, i) => sameRule(r, rules[i]))) continue;
    // Declaring a user chain with --noflush creates it, or empties it when it exists.
    lines.push(`:${quoteArg(name)} - [0:0]`, ...rules.map((r) => renderRule(name, r)));
  }
  for (const e of ensured) {
    const present = existing.some((r) => r.chain === e.chain && sameRule(r.rule, e.rule));
    if (!present) lines.push(renderRule(e.chain, e.rule));
  }
  return lines.length === 0 ? [] : [`*${change.table}`, ...lines, 'COMMIT'];
}

const SAVE: Record<IptablesVariant, Record<IpFamily, string>> = {
  legacy: { 4: 'iptables-legacy-save', 6: 'ip6tables-legacy-save' },
  nft: { 4: 'iptables-nft-save', 6: 'ip6tables-nft-save' },
};
const RESTORE: Record<IptablesVariant, Record<IpFamily, string>> = {
  legacy: { 4: 'iptables-legacy-restore', 6: 'ip6tables-legacy-restore' },
  nft: { 4: 'iptables-nft-restore', 6: 'ip6tables-nft-restore' },
};

export const saveCommand = (variant: IptablesVariant, family: IpFamily): string => SAVE[variant][family];

/** One iptables variant and family inside one namespace. */
export class Iptables {
  constructor(
    readonly variant: IptablesVariant,
    readonly family: IpFamily,
    readonly netns: Netns | null,
  ) {}

  get name(): string {
    return `${this.family === 4 ? 'iptables' : 'ip6tables'}-${this.variant}`;
  }

  /**
   * The whole ruleset. Without `-t`: naming a table makes the legacy variant
   * create it in the kernel, and a read should change nothing.
   */
  async save(): Promise<SavedRuleset> {
    const r = await execChecked(`read the ${this.name} rules`, SAVE[this.variant][this.family], [], { netns: this.netns });
    return parseSave(r.stdout);
  }

  async restore(lines: string[], what: string): Promise<void> {
    if (lines.length === 0) return;
    const input = `${lines.join('\n')}\n`;
    try {
      await execChecked(what, RESTORE[this.variant][this.family], ['-w', '--noflush'], { netns: this.netns, input });
    } catch (e) {
      if (!(e instanceof FirewallError)) throw e;
      // iptables-restore names only a line number: show the line.
      const m = /line:? (\d+)/.exec(e.stderr);
      const bad = m ? lines[Number(m[1]) - 1] : undefined;
      throw bad === undefined ? e : new FirewallError(`${e.message}\n  line ${m![1]}: ${bad}`, e.command, e.netns, e.stderr, e.exitCode);
    }
  }

  async apply(change: IptablesChange, what: string): Promise<void> {
    await this.restore(planChange(await this.save(), change), what);
  }
}
