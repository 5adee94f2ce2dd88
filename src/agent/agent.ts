// The node agent (`twill agent`): flanneld's job. Start-up, in order:
//   lock the data dir → open the store → read the cluster config → choose the
//   interface and public IP → check prerequisites → acquire this node's lease
//   → set up the backend (the VXLAN device) → write subnet.env → install the
//   cluster rules → watch the other leases and program them → ready.
// Then it keeps all of that true: kernel state through DataPlane, rules every
// resync period, the lease renewed by the LeaseManager.
//
// Shutdown (SIGTERM) leaves the data plane in place: pods keep talking while
// the agent restarts, and the restart finds its lease (by public IP) and its
// VtepMAC (in the data dir) again. Losing its own lease (deleted, taken,
// expired) ends the agent with an error, as flanneld does: its supervisor
// restarts it, and the new run acquires again (the same subnet when free).
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { Handle } from '../kernel/index.js';
import { formatCidr, networkOf, parseCidr, type Cidr } from '../ipam/addr.js';
import type { Backend } from '../backend/backend.js';
import { HostGwBackend } from '../backend/hostgw.js';
import { VxlanBackend, vxlanDeviceName } from '../backend/vxlan.js';
import { openClusterRules, type ClusterRules, type ClusterRulesSpec } from '../firewall/index.js';
import { parseNetworkConfig, describeFamily, type NetworkConfig } from '../subnet/config.js';
import { describeLease, type Lease } from '../subnet/lease.js';
import { LeaseManager, type OwnLeaseLost, type PeerWatch } from '../subnet/manager.js';
import { StoreAccessError, StoreError, type SubnetStore } from '../subnet/store.js';
import { readSubnetEnv, writeSubnetEnv, type SubnetEnv } from '../subnet/subnet-env.js';
import { BridgeAddressCheck, gatewayOf } from './bridge.js';
import { DataDir } from './datadir.js';
import { DataPlane, DEFAULT_DATAPLANE_OPTIONS } from './dataplane.js';
import { startHealthServer } from './health.js';
import { chooseInterface, type ExternalInterface } from './iface.js';
import { logCniCall, type Logger } from './log.js';
import { AgentMetrics } from './metrics.js';
import type { AgentOptions } from './options.js';
import { checkPrerequisites } from './prereqs.js';
import { openStore } from './stores.js';
import type { CniCallEvent } from '../cni/server.js';
import { CNI_COMMANDS } from '../cni/env.js';

/** What the CLI gives the agent that the agent does not build itself (it does not know the plugins). */
export interface AgentServices {
  /** Serves CNI calls on a unix socket (--cni-socket); rejects when it cannot listen. */
  serveCni(socket: string, onCall: (e: CniCallEvent) => void, onError: (e: Error) => void): Promise<{ close(): Promise<void> }>;
}

/** A problem the agent cannot work around: it exits with this message. */
export class AgentError extends Error {}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Agent {
  readonly metrics = new AgentMetrics();
  private readonly dataDir: DataDir;
  private readonly h = Handle.open();
  private store: SubnetStore | null = null;
  private manager: LeaseManager | null = null;
  private peerWatch: PeerWatch | null = null;
  private dataPlane: DataPlane | null = null;
  private rules: ClusterRules | null = null;
  private rulesTimer: NodeJS.Timeout | null = null;
  private servers: Server[] = [];
  private cniServer: { close(): Promise<void> } | null = null;
  private stopped = false;
  private finish: ((e?: Error) => void) | null = null;
  private readonly state = { lease: false, subnetEnv: false, rules: false };

  constructor(private readonly opts: AgentOptions, private readonly log: Logger, private readonly services: AgentServices) {
    this.dataDir = new DataDir(opts.dataDir);
  }

  /** Runs until stop() (resolves) or a fatal error (rejects). */
  async run(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.finish = (e) => (e ? reject(e) : resolve());
    });
    try {
      await this.start();
    } catch (e) {
      await this.shutdown();
      throw e;
    }
    return done;
  }

  ready(): boolean {
    return this.state.lease && this.state.subnetEnv && this.state.rules && (this.dataPlane?.synced ?? false);
  }

  private waitingFor(): string {
    const missing = Object.entries(this.state).filter(([, ok]) => !ok).map(([what]) => what);
    if (!this.dataPlane?.synced) missing.push('first sync of the peers');
    return missing.join(', ');
  }

  private async start(): Promise<void> {
    const o = this.opts;
    this.dataDir.lock();
    await this.startHealth();
    this.store = await openStore(o.store);
    const config = await this.readConfig(this.store);
    for (const note of config.notes) this.log.info(note);
    for (const f of [config.ipv4, config.ipv6]) if (f) this.log.info({ network: describeFamily(f) }, 'cluster network');

    const ext = await chooseInterface(this.h, {
      ifaces: o.ifaces, ifaceRegexes: o.ifaceRegexes, ifaceCanReach: o.ifaceCanReach,
      publicIp: o.publicIp, publicIpv6: o.publicIpv6, ipv4: config.ipv4 !== null, ipv6: config.ipv6 !== null,
    });
    this.log.info({ iface: ext.link.name, publicIp: ext.publicIp, publicIpv6: ext.publicIpv6, how: ext.how }, 'using interface');

    const firewall = config.enableNFTables ? 'nftables' : 'iptables';
    const backends = await this.makeBackends(config, ext);
    const problems = checkPrerequisites(this.h, {
      ipv4: config.ipv4 !== null, ipv6: config.ipv6 !== null, firewall,
      devices: [ext.link.name, ...backends.filter((b): b is VxlanBackend => b instanceof VxlanBackend).map((b) => b.device)],
    });
    for (const p of problems) this.log[p.fatal ? 'error' : 'warn']({ id: p.id, fix: p.fix }, p.problem);
    const fatal = problems.filter((p) => p.fatal);
    if (fatal.length) throw new AgentError(fatal.map((p) => `${p.problem}. Fix: ${p.fix}`).join('; '));

    // Lease: this node's again (by public IP), else the one of the old subnet.env, else a free one.
    const previous = this.previousSubnets();
    this.manager = new LeaseManager(this.store, {
      renewMarginMs: o.renewMarginMs,
      watchRetryMs: o.storeRetryMs,
      log: (m) => this.log.info(m),
      onOwnLeaseLost: (e) => this.ownLeaseLost(e),
    });
    const vxlanData = (family: 4 | 6) => {
      const b = backends.find((x): x is VxlanBackend => x instanceof VxlanBackend && x.family === family);
      return b ? { VNI: b.vni, VtepMAC: b.vtepMac } : null;
    };
    const acquired = await this.retryingStore('acquire', () =>
      this.manager!.acquire(config, {
        publicIp: ext.publicIp, publicIpv6: ext.publicIpv6,
        previousSubnet: previous.ipv4, previousIpv6Subnet: previous.ipv6,
        backendType: config.backend.type,
        // flannel's fields: BackendData for the IPv4 device, BackendV6Data for the IPv6 one (also IPv6-only).
        backendData: vxlanData(4),
        backendV6Data: vxlanData(6),
      }),
    );
    const own = acquired.lease;
    this.state.lease = true;
    this.log.info({ lease: describeLease(own), key: acquired.key, how: acquired.how, attempts: acquired.attempts }, 'acquired lease');

    const bridgeCheck = new BridgeAddressCheck(this.h, config, (address) =>
      this.log.warn({ address }, 'cni0 has an address outside the cluster network: not twill\'s, left alone'),
    );
    this.dataPlane = new DataPlane(this.h, backends, this.log, this.metrics, {
      ...DEFAULT_DATAPLANE_OPTIONS,
      resyncMs: o.kernelResyncMs,
      extraSync: (l) => bridgeCheck.run(l),
    });
    this.dataPlane.startWatching();
    await this.dataPlane.setOwn(own);

    this.writeSubnetEnv(config, own, Math.min(...backends.map((b) => b.mtu)));
    this.state.subnetEnv = true;

    const spec: ClusterRulesSpec = {
      clusterCidrs: { ipv4: config.ipv4 ? formatCidr(config.ipv4.network) : undefined, ipv6: config.ipv6 ? formatCidr(config.ipv6.network) : undefined },
      podSubnets: { ipv4: own.subnet ? formatCidr(own.subnet) : undefined, ipv6: own.ipv6Subnet ? formatCidr(own.ipv6Subnet) : undefined },
      ipMasq: o.ipMasq,
      randomFully: o.ipMasqRandomFully,
      forwardRules: o.forwardRules,
    };
    this.rules = openClusterRules(firewall, null);
    await this.ensureRules(spec, 'start');
    this.state.rules = true;
    this.rulesTimer = setInterval(() => void this.ensureRules(spec, 'resync'), o.rulesResyncMs);
    await this.serveCni();

    // Until the first list of the peers succeeds, the store refusing our credentials ends the agent
    // (they will not get the rights by themselves); later, the data plane keeps what it has.
    let listed = false;
    this.peerWatch = this.manager.watch(
      (e) => {
        if (e.type === 'own-lease-lost') return;
        if (e.type === 'snapshot') listed = true;
        void this.dataPlane!.onPeerEvent(e).then(() => {
          if (e.type === 'snapshot') {
            this.metrics.ready.set(this.ready() ? 1 : 0);
            this.log.info({ subnet: own.subnet ? formatCidr(own.subnet) : null, ipv6Subnet: own.ipv6Subnet ? formatCidr(own.ipv6Subnet) : null, peers: e.leases.length }, 'ready');
          }
        }, (err: unknown) => this.log.error({ err: (err as Error).message }, 'programming the peers failed: retrying with the next sync'));
      },
      (err) => {
        this.metrics.storeErrors.inc({ op: 'watch' });
        if (err instanceof StoreAccessError && !listed) {
          this.fail(new AgentError(err.message));
          return;
        }
        this.log[err instanceof StoreAccessError ? 'error' : 'warn']({ store: this.store?.description, err: err.message }, 'store watch failed: the data plane keeps what it has; retrying');
      },
    );
  }

  /** From here on, subnet.env is written and the bridge's rules are in place: a CNI ADD can work. */
  private async serveCni(): Promise<void> {
    const socket = this.opts.cniSocket;
    if (socket === null) return;
    if (this.stopped) return;
    let server: { close(): Promise<void> };
    try {
      server = await this.services.serveCni(socket, (e) => this.onCniCall(e), (e) => this.log.error({ socket, err: e.message }, 'CNI socket failed'));
    } catch (e) {
      throw new AgentError(`--cni-socket: ${(e as Error).message}`);
    }
    // Stopped while it was starting: shutdown has run already and would not close it.
    if (this.stopped) {
      await server.close();
      return;
    }
    this.cniServer = server;
    this.log.info({ socket }, 'serving CNI calls');
  }

  private onCniCall(e: CniCallEvent): void {
    // The caller names the command: anything but the spec's few is one label value, not a new series.
    const command = (CNI_COMMANDS as readonly string[]).includes(e.command) ? e.command : 'other';
    this.metrics.cniCalls.inc({ command, outcome: e.outcome === 'served' ? (e.code === 0 ? 'ok' : 'error') : e.outcome });
    if (e.outcome === 'served') this.metrics.cniCallSeconds.observe({ command }, e.ms / 1000);
    logCniCall(this.log, e);
  }

  private async readConfig(store: SubnetStore): Promise<NetworkConfig> {
    const o = this.opts;
    if (o.netConfPath) {
      let text: string;
      try {
        text = readFileSync(o.netConfPath, 'utf8');
      } catch (e) {
        throw new AgentError(`cannot read the network config ${o.netConfPath} (--net-conf): ${(e as Error).message}`);
      }
      return parseNetworkConfig(text, o.netConfPath);
    }
    const text = await this.retryingStore('read config', () => store.readNetworkConfig());
    if (text === null) {
      throw new AgentError(
        store.description.startsWith('etcd:')
          ? `${store.description} has no network config at ${o.store.kind === 'etcd' ? o.store.prefix : ''}/config: write net-conf.json there (etcdctl put ${o.store.kind === 'etcd' ? o.store.prefix : ''}/config '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'), or give --net-conf FILE`
          : `the ${store.description} store holds no network config: give --net-conf FILE (flannel's net-conf.json)`,
      );
    }
    return parseNetworkConfig(text, `${store.description} config`);
  }

  private async makeBackends(config: NetworkConfig, ext: ExternalInterface): Promise<Backend[]> {
    const opts = config.backend.options;
    const opt = (key: string): unknown => Object.entries(opts).find(([k]) => k.toLowerCase() === key.toLowerCase())?.[1];
    switch (config.backend.type) {
      case 'vxlan': {
        const num = (key: string, fallback: number) => {
          const v = opt(key);
          if (v === undefined || v === null) return fallback;
          if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new AgentError(`Backend.${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
          return v;
        };
        const flag = (key: string) => {
          const v = opt(key);
          if (v === undefined || v === null) return false;
          if (typeof v !== 'boolean') throw new AgentError(`Backend.${key} must be true or false, got ${JSON.stringify(v)}`);
          return v;
        };
        const vni = num('VNI', 1);
        const mtuOption = num('MTU', 0);
        const backends: Backend[] = [];
        for (const family of [4, 6] as const) {
          if (!(family === 4 ? config.ipv4 : config.ipv6)) continue;
          const localIp = family === 4 ? ext.publicIp : ext.publicIpv6;
          // The overlay's own headers: 50 bytes over an IPv4 underlay, 70 over IPv6.
          const mtu = mtuOption || ext.link.mtu - (family === 4 ? 50 : 70);
          const existing = await this.h.findLink(vxlanDeviceName(vni, family));
          const vtepMac = this.dataDir.vtepMac(family, existing?.kind === 'vxlan' ? existing.mac : null);
          backends.push(
            new VxlanBackend(this.h, {
              family, vni, port: num('Port', 0), gbp: flag('GBP'), learning: flag('Learning'), directRouting: flag('DirectRouting'),
              mtu, localIp: (family === 4 ? ext.ifaceIp : ext.ifaceIpv6) ?? localIp!, underlayDevice: ext.link.name, vtepMac,
            }),
          );
        }
        return backends;
      }
      case 'host-gw':
        // flannel refuses too: peers route to the public IP, which must be this interface's.
        if (config.ipv4 && ext.publicIp !== ext.ifaceIp) throw new AgentError(`host-gw needs the public IP (${ext.publicIp}) to be ${ext.link.name}'s own address (${ext.ifaceIp}): peers route to it directly`);
        if (config.ipv6 && ext.publicIpv6 !== ext.ifaceIpv6) throw new AgentError(`host-gw needs the public IPv6 (${ext.publicIpv6}) to be ${ext.link.name}'s own address (${ext.ifaceIpv6})`);
        return [new HostGwBackend(this.h, ext.link.name, ext.link.mtu)];
      default:
        throw new AgentError(`Backend.Type ${JSON.stringify(config.backend.type)} is not supported by twill: use "vxlan" or "host-gw"`);
    }
  }

  /** The subnets of the old subnet.env: reused when still free (flannel's second choice). */
  private previousSubnets(): { ipv4: Cidr | null; ipv6: Cidr | null } {
    let env: SubnetEnv;
    try {
      env = readSubnetEnv(this.opts.subnetFile);
    } catch {
      return { ipv4: null, ipv6: null };
    }
    // FLANNEL_SUBNET is the gateway address with the prefix: the subnet is its network.
    const net = (s: string | null): Cidr | null => {
      const c = s ? parseCidr(s) : null;
      return c ? { ip: { family: c.ip.family, value: networkOf(c) }, prefix: c.prefix } : null;
    };
    return { ipv4: net(env.subnet), ipv6: net(env.ipv6Subnet) };
  }

  private writeSubnetEnv(config: NetworkConfig, own: Lease, mtu: number): void {
    const env: SubnetEnv = {
      networks: config.ipv4 ? [formatCidr(config.ipv4.network)] : [],
      subnet: own.subnet ? gatewayOf(own.subnet) : null,
      ipv6Networks: config.ipv6 ? [formatCidr(config.ipv6.network)] : [],
      ipv6Subnet: own.ipv6Subnet ? gatewayOf(own.ipv6Subnet) : null,
      mtu,
      ipMasq: this.opts.ipMasq,
    };
    try {
      writeSubnetEnv(this.opts.subnetFile, env);
    } catch (e) {
      throw new AgentError(`cannot write ${this.opts.subnetFile} (--subnet-file): ${(e as Error).message}`);
    }
    this.log.info({ file: this.opts.subnetFile, subnet: env.subnet, ipv6Subnet: env.ipv6Subnet, mtu }, 'wrote subnet.env');
  }

  private async ensureRules(spec: ClusterRulesSpec, why: string): Promise<void> {
    if (!this.rules || this.stopped) return;
    try {
      const corrections = await this.rules.ensure(spec);
      for (const c of corrections) {
        if (why === 'resync') this.metrics.ruleCorrections.inc({ kind: c.kind });
        this.log[why === 'resync' ? 'warn' : 'debug']({ firewall: c.firewall, family: c.family, object: c.object, kind: c.kind, ...(c.drop ? { drop: c.drop } : {}) }, `rules: ${c.problem}`);
      }
    } catch (e) {
      if (why === 'start') throw e;
      this.log.error({ err: (e as Error).message }, 'cannot put the cluster rules back: retrying at the next resync');
    }
  }

  /** Store calls at start: retried with backoff while the store is unreachable, so an agent may start before its store. */
  private async retryingStore<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let delay = this.opts.storeRetryMs;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        // Refused credentials stay refused: say so and stop, rather than retry in silence.
        if (!(e instanceof StoreError) || e instanceof StoreAccessError || this.stopped) throw e;
        this.metrics.storeErrors.inc({ op: what });
        this.log.warn({ err: (e as Error).message, retryInMs: delay }, `store: ${what} failed, retrying`);
        await sleep(delay);
        delay = Math.min(delay * 2, this.opts.storeRetryMs * 8);
      }
    }
  }

  private ownLeaseLost(e: OwnLeaseLost): void {
    const why = { deleted: 'was deleted from the store', taken: 'was taken by another node', expired: 'expired (renewal failed until it ran out)' }[e.reason];
    const err = new AgentError(
      `this node's lease ${describeLease(e.lease)} ${why}: stopping, so that a restart acquires one again (the same subnet when it is still free). The data plane is left in place.`,
    );
    this.log.error({ key: e.key, reason: e.reason }, err.message);
    this.fail(err);
  }

  /** Ends a running agent with an error (run() rejects with it); the data plane stays. */
  private fail(err: Error): void {
    void this.shutdown().then(() => this.finish?.(err));
  }

  private async startHealth(): Promise<void> {
    const o = this.opts;
    const health = { ready: () => this.ready(), waitingFor: () => this.waitingFor() };
    if (o.healthzPort > 0) {
      const paths: ('health' | 'metrics')[] = o.metricsPort === null || o.metricsPort === o.healthzPort ? ['health', 'metrics'] : ['health'];
      this.servers.push(await startHealthServer({ host: o.healthzIp, port: o.healthzPort, paths }, health, this.metrics));
      this.log.info({ address: `${o.healthzIp}:${o.healthzPort}`, paths }, 'health server listening');
    }
    if (o.metricsPort !== null && o.metricsPort > 0 && o.metricsPort !== o.healthzPort) {
      this.servers.push(await startHealthServer({ host: o.healthzIp, port: o.metricsPort, paths: ['metrics'] }, health, this.metrics));
      this.log.info({ address: `${o.healthzIp}:${o.metricsPort}` }, 'metrics server listening');
    }
  }

  /** Stops the agent; the data plane, the rules, subnet.env and the lease stay. */
  async stop(): Promise<void> {
    await this.shutdown();
    this.finish?.();
  }

  private async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // First: the calls in progress finish while the rest is still up.
    await this.cniServer?.close();
    this.peerWatch?.close();
    if (this.rulesTimer) clearInterval(this.rulesTimer);
    this.dataPlane?.close();
    await this.dataPlane?.idle();
    await this.manager?.close();
    await this.store?.close().catch(() => undefined);
    for (const s of this.servers) s.close();
    this.h.close();
    this.dataDir.unlock();
  }
}
