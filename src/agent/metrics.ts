// The agent's Prometheus metrics (prom-client), on a registry of its own so
// that two agents in one process (tests) do not share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly leasesKnown = new Gauge({ name: 'twill_leases_known', help: 'Remote leases this node knows (and programs)', registers: [this.registry] });
  readonly programmingSeconds = new Histogram({
    name: 'twill_programming_seconds',
    help: 'Time from a lease event reaching the agent to its kernel state being in place',
    labelNames: ['event'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly reconcileCorrections = new Counter({
    name: 'twill_reconcile_corrections_total',
    help: 'Kernel objects the agent found wrong and repaired (missing, wrong, stale), by object',
    labelNames: ['object', 'kind'],
    registers: [this.registry],
  });
  readonly ruleCorrections = new Counter({
    name: 'twill_rule_corrections_total',
    help: 'Firewall rules the agent found wrong and repaired',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly reconcileThrottled = new Counter({
    name: 'twill_reconcile_throttled_total',
    help: 'Repairs delayed because too many came in a short time (another daemon undoing twill\'s work?)',
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({ name: 'twill_store_errors_total', help: 'Failed store operations', labelNames: ['op'], registers: [this.registry] });
  readonly malformedLeases = new Counter({ name: 'twill_malformed_leases_total', help: 'Leases in the store that could not be used (logged, skipped)', registers: [this.registry] });
  readonly peerErrors = new Counter({ name: 'twill_peer_errors_total', help: 'Leases the backend could not program (e.g. host-gw peer not on-link)', registers: [this.registry] });
  readonly cniCalls = new Counter({
    name: 'twill_cni_calls_total',
    help: 'CNI calls plugin processes handed to the agent (--cni-socket), by command and outcome (ok, error, refused, bad-request)',
    labelNames: ['command', 'outcome'],
    registers: [this.registry],
  });
  readonly cniCallSeconds = new Histogram({
    name: 'twill_cni_call_seconds',
    help: 'Time the agent spent on a CNI call it served',
    labelNames: ['command'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly ready = new Gauge({ name: 'twill_ready', help: '1 once the lease, the rules and subnet.env are in place', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'twill_' });
  }
}
