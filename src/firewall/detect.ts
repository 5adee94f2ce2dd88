import { readProcNet, type Netns } from '../kernel/index.js';
import { execIn } from './exec.js';
import { saveCommand } from './iptables.js';
import { FIREWALL_BACKENDS, FirewallError, type FirewallBackendName, type IptablesVariant } from './types.js';

// Chains kubelet (1.17+) creates in the mangle table so that others can tell
// which iptables it uses.
const KUBELET_HINT = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b/m;

/** Output of a save command; null when it is missing or fails (detection is best effort). */
async function saveText(variant: IptablesVariant, family: 4 | 6, netns: Netns | null): Promise<string | null> {
  try {
    const r = await execIn(saveCommand(variant, family), [], { netns, timeoutMs: 10_000 });
    return r.code === 0 ? r.stdout : null;
  } catch {
    return null;
  }
}

/**
 * Which iptables the namespace uses, decided as kubernetes-sigs/iptables-wrappers
 * (iptables-wrapper-installer.sh, the shell version kube-proxy images used) does:
 * kubelet's hint chains first (nft, then legacy); else the variant holding more
 * rules; nft when neither holds more.
 */
export async function detectIptablesVariant(netns: Netns | null): Promise<IptablesVariant> {
  // The common case costs no process: legacy iptables has no table in this namespace
  // (its tables appear in /proc/net/ip*_tables_names when first used), so it holds no
  // rule and no kubelet hint, and the wrapper's answer is nft.
  if (!legacyHasTables(netns)) return 'nft';
  // All four at once: the full nft output includes the mangle table the wrapper reads.
  const [nft4, nft6, legacy4, legacy6] = await Promise.all([
    saveText('nft', 4, netns),
    saveText('nft', 6, netns),
    saveText('legacy', 4, netns),
    saveText('legacy', 6, netns),
  ]);
  const nft = (nft4 ?? '') + (nft6 ?? '');
  const legacy = (legacy4 ?? '') + (legacy6 ?? '');
  if (KUBELET_HINT.test(nft)) return 'nft';
  if (KUBELET_HINT.test(legacy)) return 'legacy';
  const ruleLines = (s: string) => s.split('\n').filter((l) => l.startsWith('-')).length;
  if (ruleLines(legacy) > ruleLines(nft)) return 'legacy';
  // Not in the wrapper, which assumes both work: a kernel without nf_tables.
  if (nft4 === null && legacy4 !== null) return 'legacy';
  return 'nft';
}

/** Whether legacy iptables has any table in the namespace (false also when the proc files are missing). */
function legacyHasTables(netns: Netns | null): boolean {
  return ['ip_tables_names', 'ip6_tables_names'].some((f) => (readProcNet(netns, f) ?? '').trim() !== '');
}

/**
 * As the reference's utils.SupportsIPTables: an iptables runs and can read the
 * filter table. nft first: reading never creates a table there.
 */
export async function supportsIptables(netns: Netns | null): Promise<boolean> {
  for (const cmd of ['iptables-nft', 'iptables-legacy']) {
    try {
      if ((await execIn(cmd, ['-w', '-t', 'filter', '-S', 'INPUT'], { netns, timeoutMs: 10_000 })).code === 0) return true;
    } catch {
      // Not installed: try the other.
    }
  }
  return false;
}

/** As the reference's utils.SupportsNFTables (knftables.New): nft runs and may change the ruleset. */
export async function supportsNftables(netns: Netns | null): Promise<boolean> {
  try {
    const r = await execIn('nft', ['--check', 'add', 'table', 'ip', 'supports_nftables_test'], { netns, timeoutMs: 10_000 });
    return r.code === 0;
  } catch {
    return false;
  }
}

/**
 * The bridge plugin's `ipMasqBackend`, resolved as the reference resolves it
 * (plugins v1.6.0+ pkg/ip/ipmasq_linux.go): unset means iptables, unless only
 * nftables works here.
 */
export async function chooseBackend(requested: string | undefined, netns: Netns | null): Promise<FirewallBackendName> {
  if (requested === undefined) {
    if (!(await supportsIptables(netns)) && (await supportsNftables(netns))) return 'nftables';
    return 'iptables';
  }
  if ((FIREWALL_BACKENDS as readonly string[]).includes(requested)) return requested as FirewallBackendName;
  throw new FirewallError(`invalid ipMasqBackend ${JSON.stringify(requested)}: allowed values are ${FIREWALL_BACKENDS.map((b) => `"${b}"`).join(' and ')} (or leave it out: iptables, or nftables where iptables does not work)`);
}
