import { invalidEnv } from './errors.js';

/** CNI_ARGS: "K=V;K=V". Malformed pairs are refused. */
export function parseCniArgs(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!raw) return out;
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalidEnv(`CNI_ARGS: invalid pair "${pair}": expected KEY=VALUE`, raw);
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

const truthy = (v: string | undefined): boolean => v !== undefined && /^(1|true)$/i.test(v);

/** Keys a plugin does not know are an error, unless the runtime said IgnoreUnknown=1 (CRI runtimes do). */
export function checkKnownArgs(args: Map<string, string>, known: readonly string[]): void {
  if (truthy(args.get('IgnoreUnknown'))) return;
  const unknown = [...args.keys()].filter((k) => k !== 'IgnoreUnknown' && !known.includes(k));
  if (unknown.length) {
    throw invalidEnv(
      `CNI_ARGS: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (known: ${known.join(', ') || 'none'}; add IgnoreUnknown=1 to allow others)`,
    );
  }
}
