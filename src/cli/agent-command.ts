// `twill agent`: the flags of DESIGN.md, plus flanneld's own flags and its
// FLANNELD_* variables as aliases, so that a flanneld command line (Go style,
// `-etcd-endpoints=...` with one dash included) works unchanged.
import { hostname } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULTS, LOG_LEVELS, type AgentOptions, type LogLevel, type StoreSpec } from '../agent/options.js';

/** Go's flag package takes `-name` like `--name`; commander does not. */
export function normalizeGoFlags(args: string[]): string[] {
  const out: string[] = [];
  for (const [i, a] of args.entries()) {
    if (a === '--') return [...out, ...args.slice(i)];
    out.push(/^-[a-z][a-z0-9-]+(=.*)?$/i.test(a) ? `-${a}` : a);
  }
  return out;
}

const parseBool = (name: string) => (v: string): boolean => {
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  throw new InvalidArgumentError(`--${name} takes true or false, got ${JSON.stringify(v)}`);
};

const parseCount = (name: string, min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
};

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), ...v.split(',').map((s) => s.trim()).filter(Boolean)];

/** A flannel flag kept for compatibility: hidden from --help (listed once, below it). */
const alias = (flags: string, env: string) => new Option(flags).env(env).hideHelp();

interface RawOptions {
  store?: string;
  netConf?: string;
  netConfigPath?: string;
  etcdEndpoints?: string;
  etcdPrefix: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  kubeSubnetMgr?: boolean;
  kubeApiUrl?: string;
  kubeconfigFile?: string;
  kubeAnnotationPrefix?: string;
  setNodeNetworkUnavailable?: boolean;
  iface?: string[];
  ifaceRegex?: string[];
  ifaceCanReach?: string;
  publicIp?: string;
  publicIpv6?: string;
  subnetFile: string;
  dataDir: string;
  ipMasq?: boolean;
  ipMasqFullyRandomDisable?: boolean;
  healthzIp: string;
  healthzPort: number;
  metricsPort?: number;
  iptablesResync: number;
  iptablesForwardRules?: boolean;
  ipBlackholeRoute?: boolean;
  subnetLeaseRenewMargin: number;
  kernelResync: number;
  logLevel: LogLevel;
  printOptions?: boolean;
  nodeName?: string;
  cniSocket?: string;
}

const STORE_CHOICES =
  'choose where leases live: --store local:PATH (one SQLite file, for one machine or a lab), ' +
  '--store etcd:URL[,URL] (or flannel\'s --etcd-endpoints), or --store kube (flannel\'s --kube-subnet-mgr). ' +
  'twill has no default store: nodes that each lease from a private store would hand out the same subnets.';

/** The flags that choose a store: `twill explain --store` resolves them the same way. */
export type StoreFlags = Pick<RawOptions, 'store' | 'etcdEndpoints' | 'etcdPrefix' | 'etcdCafile' | 'etcdCertfile' | 'etcdKeyfile' | 'etcdUsername' | 'etcdPassword' | 'kubeSubnetMgr'> &
  Partial<Pick<RawOptions, 'kubeApiUrl' | 'kubeconfigFile' | 'kubeAnnotationPrefix' | 'setNodeNetworkUnavailable' | 'nodeName'>>;

/** This node's name: --node-name, NODE_NAME (commander reads it into nodeName), else the hostname (as the kubelet's default). */
export const resolveNodeName = (raw: Pick<RawOptions, 'nodeName'>): string => raw.nodeName ?? hostname();

/**
 * The flags that reach the Kubernetes API, with flannel's names and FLANNELD_*
 * variables. The agent hides them in its --help (flannel aliases, listed after
 * it); `twill explain` shows them. Both resolve them with resolveStore.
 */
export function kubeStoreOptions(help: 'hidden' | 'shown'): Option[] {
  const option = (flags: string, description: string, env: string) => {
    const o = new Option(flags, description).env(env);
    return help === 'hidden' ? o.hideHelp() : o;
  };
  return [
    option('--kube-subnet-mgr [bool]', 'the leases are the cluster\'s Nodes (flannel\'s flag; same as --store kube)', 'FLANNELD_KUBE_SUBNET_MGR').argParser(parseBool('kube-subnet-mgr')).preset(true),
    option('--kubeconfig-file <FILE>', 'kubeconfig for the API with --store kube (default: in-cluster, the pod\'s service account)', 'FLANNELD_KUBECONFIG_FILE'),
    option('--kube-api-url <URL>', 'the API server (with a kubeconfig: replaces its server; alone: no credentials)', 'FLANNELD_KUBE_API_URL'),
    option('--kube-annotation-prefix <P>', `prefix of flannel's node annotations (default ${DEFAULTS.kubeAnnotationPrefix})`, 'FLANNELD_KUBE_ANNOTATION_PREFIX'),
  ];
}

export function resolveStore(raw: StoreFlags): StoreSpec {
  const etcd = (endpoints: string[]): StoreSpec => {
    for (const e of endpoints) {
      if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new InvalidArgumentError(`etcd endpoint ${JSON.stringify(e)} is not a URL like http://10.0.0.1:2379`);
    }
    return {
      kind: 'etcd', endpoints, prefix: raw.etcdPrefix.replace(/\/+$/, ''),
      caFile: raw.etcdCafile ?? null, certFile: raw.etcdCertfile ?? null, keyFile: raw.etcdKeyfile ?? null,
      username: raw.etcdUsername ?? null, password: raw.etcdPassword ?? null,
    };
  };
  const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
  // The agent fills in its public IP flags (resolveAgentOptions).
  const kube = (): StoreSpec => ({
    kind: 'kube', apiUrl: raw.kubeApiUrl ?? null, kubeconfigFile: raw.kubeconfigFile ?? null,
    annotationPrefix: raw.kubeAnnotationPrefix ?? DEFAULTS.kubeAnnotationPrefix,
    setNodeNetworkUnavailable: raw.setNodeNetworkUnavailable ?? true, nodeName: resolveNodeName(raw), publicIpFlags: { ipv4: false, ipv6: false },
  });
  if (raw.store !== undefined) {
    const [kind, ...rest] = raw.store.split(':');
    const arg = rest.join(':');
    if (raw.etcdEndpoints !== undefined && kind !== 'etcd') throw new InvalidArgumentError(`--store ${raw.store} and --etcd-endpoints contradict each other: give one`);
    switch (kind) {
      case 'local':
        if (!arg) throw new InvalidArgumentError('--store local needs the path of its file: --store local:/var/lib/twill/leases.db');
        return { kind: 'local', path: arg };
      case 'etcd':
        if (!arg) throw new InvalidArgumentError('--store etcd needs its endpoints: --store etcd:http://10.0.0.1:2379[,http://...]');
        return etcd(list(arg));
      case 'kube':
        return kube();
      default:
        throw new InvalidArgumentError(`--store ${JSON.stringify(raw.store)} is not a store: ${STORE_CHOICES}`);
    }
  }
  if (raw.kubeSubnetMgr) return kube();
  if (raw.etcdEndpoints !== undefined) return etcd(list(raw.etcdEndpoints));
  throw new InvalidArgumentError(`no store: ${STORE_CHOICES}`);
}

export function resolveAgentOptions(raw: RawOptions): AgentOptions {
  let store = resolveStore(raw);
  const nodeName = resolveNodeName(raw);
  if (store.kind === 'kube') store = { ...store, publicIpFlags: { ipv4: raw.publicIp !== undefined, ipv6: raw.publicIpv6 !== undefined } };
  if (raw.netConf !== undefined && raw.netConfigPath !== undefined && raw.netConf !== raw.netConfigPath) {
    throw new InvalidArgumentError('--net-conf and --net-config-path name different files: give one');
  }
  let netConfPath = raw.netConf ?? raw.netConfigPath ?? null;
  if (store.kind === 'local' && netConfPath === null) {
    throw new InvalidArgumentError('the local store holds no network config: give --net-conf FILE (flannel\'s net-conf.json, e.g. {"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}})');
  }
  if (store.kind === 'kube') netConfPath ??= DEFAULTS.kubeNetConf;
  if (raw.metricsPort !== undefined && raw.healthzPort === 0 && raw.metricsPort === 0) throw new InvalidArgumentError('--metrics-port 0 serves nothing: leave it out');
  return {
    store,
    netConfPath,
    ifaces: raw.iface ?? [],
    ifaceRegexes: raw.ifaceRegex ?? [],
    ifaceCanReach: raw.ifaceCanReach ?? null,
    publicIp: raw.publicIp ?? null,
    publicIpv6: raw.publicIpv6 ?? null,
    subnetFile: raw.subnetFile,
    dataDir: raw.dataDir,
    ipMasq: raw.ipMasq ?? false,
    ipMasqRandomFully: !(raw.ipMasqFullyRandomDisable ?? false),
    forwardRules: raw.iptablesForwardRules ?? true,
    healthzIp: raw.healthzIp,
    healthzPort: raw.healthzPort,
    metricsPort: raw.metricsPort ?? null,
    rulesResyncMs: raw.iptablesResync * 1000,
    renewMarginMs: raw.subnetLeaseRenewMargin * 60_000,
    kernelResyncMs: raw.kernelResync * 1000,
    storeRetryMs: DEFAULTS.storeRetrySeconds * 1000,
    logLevel: raw.logLevel,
    nodeName,
    cniSocket: raw.cniSocket === undefined || raw.cniSocket === '' ? null : raw.cniSocket,
  };
}

export function registerAgentCommand(program: Command, twillVersion: string): void {
  const cmd = program
    .command('agent')
    .description('the node agent (flanneld\'s job): lease this node a subnet, program VXLAN or host-gw, write subnet.env, keep it all in place')
    .addOption(new Option('--store <SPEC>', 'where leases live: local:PATH | etcd:URL[,URL] | kube (required: no default)').env('TWILL_STORE'))
    .addOption(new Option('--net-conf <FILE>', 'net-conf.json (required with local; etcd reads <prefix>/config unless given)'))
    .addOption(alias('--net-config-path <FILE>', 'FLANNELD_NET_CONFIG_PATH'))
    .addOption(new Option('--etcd-endpoints <URLS>', 'etcd endpoints, comma-separated (same as --store etcd:URLS)').env('FLANNELD_ETCD_ENDPOINTS'))
    .addOption(new Option('--etcd-prefix <PREFIX>', 'etcd key prefix').default(DEFAULTS.etcdPrefix).env('FLANNELD_ETCD_PREFIX'))
    .addOption(new Option('--etcd-cafile <FILE>', 'CA certificate to verify etcd').env('FLANNELD_ETCD_CAFILE'))
    .addOption(new Option('--etcd-certfile <FILE>', 'client certificate for etcd').env('FLANNELD_ETCD_CERTFILE'))
    .addOption(new Option('--etcd-keyfile <FILE>', 'client key for etcd').env('FLANNELD_ETCD_KEYFILE'))
    .addOption(new Option('--etcd-username <NAME>', 'etcd user').env('FLANNELD_ETCD_USERNAME'))
    .addOption(new Option('--etcd-password <PASSWORD>', 'etcd password').env('FLANNELD_ETCD_PASSWORD'));
  for (const o of kubeStoreOptions('hidden')) cmd.addOption(o);
  cmd
    .addOption(alias('--set-node-network-unavailable [bool]', 'FLANNELD_SET_NODE_NETWORK_UNAVAILABLE').argParser(parseBool('set-node-network-unavailable')).preset(true))
    .addOption(new Option('--iface <NAME|IP>', 'interface for traffic between nodes, by name or address (repeatable: the first that exists)').argParser(collect).env('FLANNELD_IFACE'))
    .addOption(new Option('--iface-regex <RE>', 'the first interface whose address or name matches (repeatable)').argParser(collect).env('FLANNELD_IFACE_REGEX'))
    .addOption(new Option('--iface-can-reach <IP>', 'the interface of the route to this IP').env('FLANNELD_IFACE_CAN_REACH'))
    .addOption(new Option('--public-ip <IP>', 'the IPv4 other nodes reach this one at (default: the interface\'s)').env('FLANNELD_PUBLIC_IP'))
    .addOption(new Option('--public-ipv6 <IP>', 'the IPv6 other nodes reach this one at').env('FLANNELD_PUBLIC_IPV6'))
    .addOption(new Option('--subnet-file <FILE>', 'where to write subnet.env (read by the flannel CNI plugin)').default(DEFAULTS.subnetFile).env('FLANNELD_SUBNET_FILE'))
    .addOption(new Option('--data-dir <DIR>', 'what the agent keeps between runs (its lock, the VtepMAC)').default(DEFAULTS.dataDir).env('TWILL_DATA_DIR'))
    .addOption(new Option('--ip-masq [bool]', 'masquerade traffic from pods to outside the cluster network').argParser(parseBool('ip-masq')).preset(true).env('FLANNELD_IP_MASQ'))
    .addOption(new Option('--ip-masq-fully-random-disable [bool]', 'no --random-fully on MASQUERADE').argParser(parseBool('ip-masq-fully-random-disable')).preset(true).env('FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE'))
    .addOption(new Option('--healthz-ip <IP>', 'address of the health and metrics server').default(DEFAULTS.healthzIp).env('FLANNELD_HEALTHZ_IP'))
    .addOption(new Option('--healthz-port <PORT>', 'port for /healthz, /readyz (and /metrics); 0: none').argParser(parseCount('healthz-port', 0, 65535)).default(0).env('FLANNELD_HEALTHZ_PORT'))
    .addOption(new Option('--metrics-port <PORT>', 'port for /metrics when it should differ from --healthz-port').argParser(parseCount('metrics-port', 1, 65535)).env('TWILL_METRICS_PORT'))
    .addOption(new Option('--iptables-resync <SECONDS>', 'how often the firewall rules are checked and put back').argParser(parseCount('iptables-resync', 1, 3600)).default(DEFAULTS.rulesResyncSeconds).env('FLANNELD_IPTABLES_RESYNC'))
    .addOption(alias('--iptables-forward-rules [bool]', 'FLANNELD_IPTABLES_FORWARD_RULES').argParser(parseBool('iptables-forward-rules')).preset(true))
    .addOption(alias('--ip-blackhole-route [bool]', 'FLANNELD_IP_BLACKHOLE_ROUTE').argParser(parseBool('ip-blackhole-route')).preset(true))
    .addOption(new Option('--subnet-lease-renew-margin <MINUTES>', 'renew the lease this long before it expires').argParser(parseCount('subnet-lease-renew-margin', 1, 1439)).default(DEFAULTS.renewMarginMinutes).env('FLANNELD_SUBNET_LEASE_RENEW_MARGIN'))
    .addOption(new Option('--kernel-resync <SECONDS>', 'safety-net full check of the kernel state (changes are seen at once anyway)').argParser(parseCount('kernel-resync', 1, 86400)).default(DEFAULTS.kernelResyncSeconds))
    .addOption(new Option('--cni-socket <PATH>', 'serve the CNI plugins\' calls on this unix socket once the node is set up (plugins look for /run/twill/cni.sock; see "twill cni serve --help")'))
    .addOption(new Option('--log-level <LEVEL>', 'debug, info, warn or error').choices([...LOG_LEVELS]).default('info').env('TWILL_LOG_LEVEL'))
    .addOption(new Option('--node-name <NAME>', 'this node\'s name: its Node object with --store kube, and in logs (default: the hostname)').env('NODE_NAME'))
    .addOption(new Option('--print-options', 'print the settings as understood (flags, flanneld aliases, FLANNELD_* variables) as JSON, and exit'))
    .addHelpText(
      'after',
      [
        '',
        'flanneld\'s flags work too (with one dash or two): --net-config-path, --kube-subnet-mgr,',
        '--kube-api-url, --kubeconfig-file, --kube-annotation-prefix, --set-node-network-unavailable,',
        '--iptables-forward-rules, --ip-blackhole-route; and every flag can come from FLANNELD_<FLAG>',
        '(FLANNELD_IFACE=eth1, FLANNELD_IP_MASQ=true), as flanneld reads them.',
        '',
        'Logs are JSON lines on stderr. SIGTERM stops the agent and leaves the network in place;',
        'a restart finds its lease and its VXLAN MAC again.',
        '',
        'Examples:',
        '  twill agent --store etcd:http://10.0.0.1:2379 --ip-masq',
        '  twill agent --store local:/var/lib/twill/leases.db --net-conf /etc/twill/net-conf.json --iface eth1',
        '  twill agent -etcd-endpoints=http://10.0.0.1:2379 -iface=eth1 -ip-masq    # a flanneld command line',
      ].join('\n'),
    )
    .action(async (raw: RawOptions, command: Command) => {
      let opts: AgentOptions;
      try {
        opts = resolveAgentOptions(raw);
      } catch (e) {
        if (e instanceof InvalidArgumentError) command.error(`twill agent: ${e.message}`, { exitCode: 2 });
        throw e;
      }
      if (raw.printOptions) {
        process.stdout.write(`${JSON.stringify({ ...opts, store: { ...opts.store, ...('password' in opts.store && opts.store.password ? { password: '(set)' } : {}) } }, null, 2)}\n`);
        return;
      }
      const { restartWithAgentV8Flags } = await import('../agent/v8flags.js');
      const notRestarted = restartWithAgentV8Flags();
      const { createLogger } = await import('../agent/log.js');
      const { Agent } = await import('../agent/agent.js');
      const log = createLogger(opts.logLevel, opts.nodeName);
      if (notRestarted) log.warn(notRestarted);
      if (raw.ipBlackholeRoute) log.warn('--ip-blackhole-route is not supported yet: ignored');
      const agent = new Agent(opts, log, {
        serveCni: async (socket, onCall, onError) => (await import('./cni-serve.js')).startCniServer(socket, twillVersion, onCall, onError),
      });
      const stop = (signal: string) => {
        log.info({ signal }, 'stopping: the network stays in place');
        void agent.stop();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      try {
        await agent.run();
      } catch (e) {
        log.fatal({ err: (e as Error).message }, 'agent stopped');
        process.stderr.write(`twill agent: ${(e as Error).message}\n`);
        process.exitCode = 1;
      }
    });
  cmd.showHelpAfterError('(run "twill agent --help" for usage)');
  // Usage errors exit 2, as for every flag the agent itself refuses: 1 means the agent ran and failed.
  cmd.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
}
