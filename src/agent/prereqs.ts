// What the node must have for pod traffic to flow, checked at start, each with
// the exact command that fixes it. A missing forwarding sysctl is fatal (no pod
// could reach another node); the others are warnings, because traffic between
// nodes still works without them (see docs/AGENT.md).
import type { Handle } from '../kernel/index.js';

export interface Prerequisite {
  /** Stable id: ip-forward-off, ipv6-forwarding-off, br-netfilter-missing, rp-filter-strict. */
  id: string;
  fatal: boolean;
  problem: string;
  fix: string;
}

export interface PrerequisiteInput {
  ipv4: boolean;
  ipv6: boolean;
  /** The firewall backend: br_netfilter matters where iptables rules must see bridged pod traffic. */
  firewall: 'iptables' | 'nftables';
  /** The devices pod traffic crosses: the underlay and the overlay. */
  devices: string[];
}

function read(h: Handle, key: string): string | null {
  try {
    return h.readSysctl(key).trim();
  } catch {
    return null;
  }
}

export function checkPrerequisites(h: Handle, input: PrerequisiteInput): Prerequisite[] {
  const found: Prerequisite[] = [];
  if (input.ipv4 && read(h, 'net.ipv4.ip_forward') !== '1') {
    found.push({
      id: 'ip-forward-off', fatal: true,
      problem: 'net.ipv4.ip_forward is 0: this node would not forward pod traffic to other nodes',
      fix: "sysctl -w net.ipv4.ip_forward=1 (and 'net.ipv4.ip_forward = 1' in /etc/sysctl.d/ to keep it)",
    });
  }
  if (input.ipv6 && read(h, 'net.ipv6.conf.all.forwarding') !== '1') {
    found.push({
      id: 'ipv6-forwarding-off', fatal: true,
      problem: 'net.ipv6.conf.all.forwarding is 0: this node would not forward IPv6 pod traffic',
      fix: "sysctl -w net.ipv6.conf.all.forwarding=1 (and in /etc/sysctl.d/ to keep it)",
    });
  }
  const brnf = read(h, 'net.bridge.bridge-nf-call-iptables');
  if (brnf === null) {
    found.push({
      id: 'br-netfilter-missing', fatal: false,
      problem: `the br_netfilter module is not loaded: traffic between pods on one bridge skips ${input.firewall} (kube-proxy's Service rules miss it)`,
      fix: 'modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 (and br_netfilter in /etc/modules-load.d/)',
    });
  } else if (brnf !== '1' && input.firewall === 'iptables') {
    found.push({
      id: 'br-netfilter-missing', fatal: false,
      problem: 'net.bridge.bridge-nf-call-iptables is 0: bridged pod traffic skips iptables (kube-proxy\'s Service rules miss it)',
      fix: 'sysctl -w net.bridge.bridge-nf-call-iptables=1',
    });
  }
  if (input.ipv4) {
    const all = Number(read(h, 'net.ipv4.conf.all.rp_filter') ?? '0');
    for (const dev of input.devices) {
      const own = read(h, `net/ipv4/conf/${dev}/rp_filter`);
      if (own === null) continue; // not created yet
      // The kernel uses the larger of "all" and the device's value.
      if (Math.max(all, Number(own)) === 1) {
        found.push({
          id: 'rp-filter-strict', fatal: false,
          problem: `rp_filter is strict (1) on ${dev}: replies that come back another way are dropped`,
          fix: `sysctl -w net.ipv4.conf.${dev}.rp_filter=2${all === 1 ? ' net.ipv4.conf.all.rp_filter=2' : ''} (loose)`,
        });
      }
    }
  }
  return found;
}
