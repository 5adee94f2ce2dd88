// The agent's settings, as the CLI resolved them (flags, flannel's aliases and
// FLANNELD_* variables): see src/cli/agent-command.ts.
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type StoreSpec =
  | { kind: 'local'; path: string }
  | {
      kind: 'etcd';
      endpoints: string[];
      prefix: string;
      caFile: string | null;
      certFile: string | null;
      keyFile: string | null;
      username: string | null;
      password: string | null;
    }
  | {
      kind: 'kube';
      /** --kube-api-url, --kubeconfig-file; neither: in-cluster (the pod's service account). */
      apiUrl: string | null;
      kubeconfigFile: string | null;
      annotationPrefix: string;
      setNodeNetworkUnavailable: boolean;
      /** This node's Node object (NODE_NAME, --node-name); null for a reader (twill explain). */
      nodeName: string | null;
      /** Which public IPs the flags gave: flannel's node-public-ip annotations give the others. */
      publicIpFlags: { ipv4: boolean; ipv6: boolean };
    };

export interface AgentOptions {
  store: StoreSpec;
  /** net-conf.json: required with the local store; etcd holds its own (<prefix>/config) unless this is given. */
  netConfPath: string | null;
  ifaces: string[];
  ifaceRegexes: string[];
  ifaceCanReach: string | null;
  publicIp: string | null;
  publicIpv6: string | null;
  subnetFile: string;
  dataDir: string;
  ipMasq: boolean;
  ipMasqRandomFully: boolean;
  /** flanneld --iptables-forward-rules: accept the cluster network in FORWARD (default true). */
  forwardRules: boolean;
  /** 0: no /healthz, /readyz server (flannel's default). */
  healthzIp: string;
  healthzPort: number;
  /** null: /metrics on the healthz server (if any). */
  metricsPort: number | null;
  /** How often the firewall rules are re-checked (iptables-legacy sends no notifications). */
  rulesResyncMs: number;
  renewMarginMs: number;
  /** The safety-net full sync of the kernel state (notifications do the real work). */
  kernelResyncMs: number;
  /** Retry period for the store when it fails (backoff up to 8× this). */
  storeRetryMs: number;
  logLevel: LogLevel;
  /** Names this node in logs: the hostname by default. */
  nodeName: string;
  /** Where to serve CNI calls that plugin processes hand over (null: not served). */
  cniSocket: string | null;
}

export const DEFAULTS = {
  subnetFile: '/run/flannel/subnet.env',
  dataDir: '/var/lib/twill',
  etcdPrefix: '/coreos.com/network',
  kubeNetConf: '/etc/kube-flannel/net-conf.json',
  kubeAnnotationPrefix: 'flannel.alpha.coreos.com',
  healthzIp: '127.0.0.1',
  rulesResyncSeconds: 5,
  renewMarginMinutes: 60,
  kernelResyncSeconds: 60,
  storeRetrySeconds: 1,
} as const;
