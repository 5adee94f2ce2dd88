// The Kubernetes store (`--store kube`, flannel's `--kube-subnet-mgr`): leases
// are Node objects, as flannel keeps them.
//
//   a lease      a node annotated <prefix>/kube-subnet-manager=true: its subnets
//                are node.spec.podCIDRs (assigned by kube-controller-manager
//                --allocate-node-cidrs), its attrs the annotations backend-type,
//                backend-data, backend-v6-data, public-ip, public-ipv6. The key
//                is flannel's etcd key of those subnets ("10.244.1.0-24").
//   acquire      assignedSubnets(): this node's podCIDRs; the manager writes
//                exactly that lease (the subnet is assigned here, not chosen).
//   create/renew patch this node's own annotations (only its own, and only for
//                its own podCIDRs), then its NetworkUnavailable=False condition
//                (reason FlannelIsUp), as flannel's AcquireLease does.
//   list/watch   list nodes, watch from the list's resourceVersion; 410 Gone
//                is CompactedError (the manager lists again).
//   revisions    resourceVersions (etcd revisions in every real API server:
//                numbers, in order).
//   expiry       none: a node's lease lives as long as the node (a reservation).
//   config       none: net-conf.json comes from --net-conf (kube-flannel's ConfigMap).
//
// User inputs read from this node's annotations (flannel's): public-ip-overwrite
// and public-ipv6-overwrite replace the public IP in the lease; node-public-ip
// and node-public-ipv6 do too unless --public-ip(v6) was given.
import { formatAddr, networkOf, parseAddr, parseCidr, type Cidr } from '../ipam/addr.js';
import { decodeAttrs, leaseKey, type Lease } from './lease.js';
import { KubeApiError, KubeClient, KubeConfigError, rbacRight, resolveConnection, type ConnectionOptions, type KubeConnection, type KubeWatch } from './kube-client.js';
import { CompactedError, LeaseGoneError, StoreAccessError, StoreError, type ListResult, type MalformedLease, type StoredLease, type SubnetStore, type WatchEvent, type Watcher } from './store.js';

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';
export const DEFAULT_KUBE_TIMEOUT_MS = 10_000;
/** How long one watch request lasts before the server ends it and the store opens the next (from where it was). */
const WATCH_SECONDS = 300;

export interface KubeStoreOptions extends Pick<ConnectionOptions, 'apiUrl' | 'kubeconfigFile' | 'env' | 'serviceAccountDir'> {
  /** This node (NODE_NAME, --node-name); null: the store only reads (twill explain): every write is refused before it reaches the API. */
  nodeName: string | null;
  /** flannel's --kube-annotation-prefix. */
  annotationPrefix?: string;
  /** flannel's --set-node-network-unavailable (default true): set NetworkUnavailable=False once the lease is written. */
  setNodeNetworkUnavailable?: boolean;
  /** Which public IPs came from flags (--public-ip, --public-ipv6): the node-public-ip annotations do not override those. */
  publicIpFlags?: { ipv4: boolean; ipv6: boolean };
  timeoutMs?: number;
}

/** flannel's annotation names under a prefix. */
export function annotationNames(prefix: string) {
  const p = prefix.replace(/\/+$/, '');
  return {
    managed: `${p}/kube-subnet-manager`,
    backendType: `${p}/backend-type`,
    backendData: `${p}/backend-data`,
    backendV6Data: `${p}/backend-v6-data`,
    publicIp: `${p}/public-ip`,
    publicIpv6: `${p}/public-ipv6`,
    nodePublicIp: `${p}/node-public-ip`,
    nodePublicIpv6: `${p}/node-public-ipv6`,
    publicIpOverwrite: `${p}/public-ip-overwrite`,
    publicIpv6Overwrite: `${p}/public-ipv6-overwrite`,
  };
}
type Names = ReturnType<typeof annotationNames>;

/** The parts of a Node the store reads. */
export interface KubeNode {
  name: string;
  resourceVersion: string;
  annotations: Record<string, string>;
  podCidrs: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A Node object from the API, checked for the fields the store uses. */
function asNode(v: unknown): KubeNode {
  const meta = isObj(v) && isObj(v.metadata) ? v.metadata : null;
  if (!meta || typeof meta.name !== 'string') throw new Error('not a Node object (no metadata.name)');
  const annotations: Record<string, string> = {};
  if (isObj(meta.annotations)) for (const [k, a] of Object.entries(meta.annotations)) if (typeof a === 'string') annotations[k] = a;
  const spec = isObj(v) && isObj(v.spec) ? v.spec : {};
  const list = Array.isArray(spec.podCIDRs) ? spec.podCIDRs.filter((c): c is string => typeof c === 'string' && c !== '') : [];
  const single = typeof spec.podCIDR === 'string' && spec.podCIDR !== '' ? [spec.podCIDR] : [];
  return { name: meta.name, resourceVersion: typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '', annotations, podCidrs: list.length ? list : single };
}

/** The node is up but the controller manager gave it no pod CIDR (flannel's error, word for word). */
export class PodCidrNotAssignedError extends Error {
  constructor(node: string, detail = '') {
    super(`node "${node}" pod cidr not assigned${detail}: kube-controller-manager assigns it with --allocate-node-cidrs (or set spec.podCIDR)`);
  }
}

interface Families {
  ipv4: boolean;
  ipv6: boolean;
}

export class KubeStore implements SubnetStore {
  readonly description: string;
  readonly names: Names;
  private readonly client: KubeClient;
  private readonly nodeName: string | null;
  private readonly setCondition: boolean;
  private readonly publicIpFlags: Families;
  /** The cluster's families: a lease carries only those subnets (flannel's nodeToLease). Both until assignedSubnets says. */
  private families: Families = { ipv4: true, ipv6: true };
  private readonly watches = new Set<Watcher>();
  private closed = false;

  constructor(opts: KubeStoreOptions) {
    let conn: KubeConnection;
    try {
      conn = resolveConnection(opts);
    } catch (e) {
      if (e instanceof KubeConfigError) throw new StoreError('open', 'kube', e.message);
      throw e;
    }
    this.description = `kube:${conn.server}`;
    this.client = new KubeClient(conn, opts.timeoutMs ?? DEFAULT_KUBE_TIMEOUT_MS);
    const prefix = opts.annotationPrefix ?? DEFAULT_ANNOTATION_PREFIX;
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(\/[-a-z0-9_.]*)?\/?$/i.test(prefix)) {
      throw new StoreError('open', this.description, `--kube-annotation-prefix ${JSON.stringify(prefix)} is not an annotation prefix (expected a DNS name like ${DEFAULT_ANNOTATION_PREFIX})`);
    }
    this.names = annotationNames(prefix);
    this.nodeName = opts.nodeName;
    this.setCondition = opts.setNodeNetworkUnavailable ?? true;
    this.publicIpFlags = opts.publicIpFlags ?? { ipv4: false, ipv6: false };
  }

  /** Where the API settings came from: for logs. */
  get source(): string {
    return this.client.conn.source;
  }

  private check(op: string, key?: string): void {
    if (this.closed) throw new StoreError(op, this.description, 'the store is closed', key);
  }

  private wrap(op: string, key: string | undefined, e: unknown): StoreError {
    if (e instanceof StoreError) return e;
    if (e instanceof KubeApiError && (e.status === 401 || e.status === 403)) return this.accessError(op, key, e);
    const text = e instanceof Error ? e.message : String(e);
    const hint = e instanceof KubeApiError ? '' : ` — is the API server running and reachable? (${this.client.conn.source})`;
    return new StoreError(op, this.description, `${text}${hint}`, key, { cause: e });
  }

  /**
   * 401 or 403: which right was missing, whose, and the command that grants
   * it (the API server names the user in its message: a service account gets
   * --serviceaccount, anyone else --user).
   */
  private accessError(op: string, key: string | undefined, e: KubeApiError): StoreAccessError {
    const source = this.client.conn.source;
    if (e.status === 401) {
      return new StoreAccessError(op, this.description,
        `the API server does not accept the credentials of ${source} (${e.message}): the token expired or was revoked, or the client certificate is not signed by the cluster's CA. ` +
        'Give credentials it knows: a current kubeconfig (--kubeconfig-file), or run in the pod with its service account', key, { cause: e });
    }
    const right = rbacRight(e.method, e.path);
    const what = right ? `"${right.verb}" on "${right.resource}"` : `${e.method} ${e.path}`;
    const user = /User "([^"]+)"/.exec(e.message)?.[1] ?? null;
    const sa = user ? /^system:serviceaccount:([^:]+):([^:]+)$/.exec(user) : null;
    const subject = sa ? `--serviceaccount=${sa[1]}:${sa[2]}` : user ? `--user=${user}` : '--serviceaccount=NAMESPACE:NAME';
    const bindingName = `twill-${(sa ? sa[2]! : user ?? 'agent').toLowerCase().replace(/[^a-z0-9.-]+/g, '-')}`;
    const needs = this.nodeName === null
      ? 'twill explain needs "list" on "nodes" (the ClusterRole "twill" of deploy/kube-twill.yml has it)'
      : 'The agent needs "get", "list" and "watch" on "nodes" and "patch" on "nodes/status", the rights of the ClusterRole "twill" in deploy/kube-twill.yml (kube-flannel\'s ClusterRole "flannel" grants the same)';
    return new StoreAccessError(op, this.description,
      `forbidden: ${user ? `user "${user}"` : 'these credentials'} may not ${what} (the API server said ${e.message}; credentials from ${source}). ` +
      `${needs}. Bind it: kubectl create clusterrolebinding ${bindingName} --clusterrole=twill ${subject}`, key, { cause: e });
  }

  private async run<T>(op: string, key: string | undefined, fn: () => Promise<T>): Promise<T> {
    this.check(op, key);
    try {
      return await fn();
    } catch (e) {
      throw this.wrap(op, key, e);
    }
  }

  private ownName(op: string): string {
    if (this.nodeName === null) throw new StoreError(op, this.description, 'this store was opened read-only, without a node name (twill explain never writes; an agent needs NODE_NAME or --node-name)');
    return this.nodeName;
  }

  private nodePath(name: string): string {
    return `/api/v1/nodes/${encodeURIComponent(name)}`;
  }

  private async getNode(op: string, name: string): Promise<KubeNode | null> {
    try {
      return asNode(await this.client.call('GET', this.nodePath(name)));
    } catch (e) {
      if (e instanceof KubeApiError && e.status === 404) return null;
      throw this.wrap(op, `node ${name}`, e);
    }
  }

  /** The node's pod CIDRs of the cluster's families. */
  private subnetsOf(node: KubeNode): { subnet: Cidr | null; ipv6Subnet: Cidr | null; bad: string | null } {
    let subnet: Cidr | null = null;
    let ipv6Subnet: Cidr | null = null;
    for (const text of node.podCidrs) {
      const c = parseCidr(text);
      if (!c || networkOf(c) !== c.ip.value) return { subnet: null, ipv6Subnet: null, bad: `its pod CIDR ${JSON.stringify(text)} is not a subnet` };
      if (c.ip.family === 4 && this.families.ipv4 && !subnet) subnet = c;
      if (c.ip.family === 6 && this.families.ipv6 && !ipv6Subnet) ipv6Subnet = c;
    }
    return { subnet, ipv6Subnet, bad: null };
  }

  /** A node as a lease: null when it is not one (no kube-subnet-manager=true annotation); an error when malformed. */
  nodeLease(node: KubeNode): { key: string; lease: Lease } | { key: string; error: string } | null {
    const a = node.annotations;
    if (a[this.names.managed] !== 'true') return null;
    const { subnet, ipv6Subnet, bad } = this.subnetsOf(node);
    if (bad || (!subnet && !ipv6Subnet)) return { key: `node/${node.name}`, error: `node ${node.name} is annotated ${this.names.managed}=true but ${bad ?? 'has no pod CIDR of the cluster\'s families'}` };
    const key = leaseKey({ subnet, ipv6Subnet });
    const json = (name: string): unknown => {
      const text = a[name];
      if (text === undefined || text === '') return null;
      try {
        return JSON.parse(text) as unknown;
      } catch (e) {
        throw new Error(`node ${node.name}: annotation ${name} is not JSON (${(e as Error).message})`);
      }
    };
    try {
      const attrs = decodeAttrs(JSON.stringify({
        PublicIP: subnet ? (a[this.names.publicIp] ?? null) : null,
        PublicIPv6: ipv6Subnet ? (a[this.names.publicIpv6] ?? null) : null,
        BackendType: a[this.names.backendType] ?? '',
        BackendData: subnet ? json(this.names.backendData) : null,
        BackendV6Data: ipv6Subnet ? json(this.names.backendV6Data) : null,
      }), `${key} (node ${node.name})`);
      return { key, lease: { subnet, ipv6Subnet, attrs, expiresAt: null } };
    } catch (e) {
      return { key, error: (e as Error).message };
    }
  }

  private stored(node: KubeNode, op: string): StoredLease {
    const l = this.nodeLease(node);
    if (!l || 'error' in l) throw new StoreError(op, this.description, `node ${node.name} is not a lease after the write: ${l ? l.error : 'the annotation is missing'}`);
    return { key: l.key, lease: l.lease, modRevision: this.revision(node.resourceVersion, op), node: node.name };
  }

  private revision(rv: string, op: string): number {
    const n = Number(rv);
    if (!rv || !Number.isSafeInteger(n)) throw new StoreError(op, this.description, `resourceVersion ${JSON.stringify(rv)} is not a number: this store needs an API server backed by etcd`);
    return n;
  }

  /**
   * This node's pod CIDRs of the cluster's families (the manager's hook for an
   * assigned subnet). Also sets those families for every lease from now on.
   * A node not (yet) registered is a StoreError (the agent retries); a node
   * without a pod CIDR is PodCidrNotAssignedError (the agent exits, as flanneld).
   */
  async assignedSubnets(families: Families): Promise<Pick<Lease, 'subnet' | 'ipv6Subnet'>> {
    const name = this.ownName('assigned subnets');
    this.check('assigned subnets');
    this.families = { ...families };
    const node = await this.getNode('assigned subnets', name);
    if (!node) throw new StoreError('assigned subnets', this.description, `node "${name}" does not exist (yet?): NODE_NAME or --node-name must be this node's name in the API`);
    const { subnet, ipv6Subnet, bad } = this.subnetsOf(node);
    if (bad) throw new PodCidrNotAssignedError(name, ` (${bad})`);
    if (families.ipv4 && !subnet) throw new PodCidrNotAssignedError(name, node.podCidrs.length ? ` (no IPv4 pod CIDR among ${node.podCidrs.join(', ')})` : '');
    if (families.ipv6 && !ipv6Subnet) throw new PodCidrNotAssignedError(name, ` (no IPv6 pod CIDR${node.podCidrs.length ? ` among ${node.podCidrs.join(', ')}` : ''}; the network config enables IPv6)`);
    return { subnet, ipv6Subnet };
  }

  async readNetworkConfig(): Promise<string | null> {
    return null;
  }

  async list(): Promise<ListResult> {
    return this.run('list', undefined, async () => {
      const leases: StoredLease[] = [];
      const malformed: MalformedLease[] = [];
      let revision = 0;
      let cont = '';
      do {
        const page = await this.client.call('GET', `/api/v1/nodes?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
        const meta = isObj(page) && isObj(page.metadata) ? page.metadata : {};
        // A paged list is one snapshot: the first page's resourceVersion.
        if (!revision) revision = this.revision(typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '', 'list');
        cont = typeof meta.continue === 'string' ? meta.continue : '';
        for (const item of isObj(page) && Array.isArray(page.items) ? page.items : []) {
          const node = asNode(item);
          const l = this.nodeLease(node);
          if (!l) continue;
          if ('error' in l) malformed.push({ key: l.key, error: l.error });
          else leases.push({ key: l.key, lease: l.lease, modRevision: this.revision(node.resourceVersion, 'list'), node: node.name });
        }
      } while (cont);
      return { leases, revision, malformed };
    });
  }

  /** The annotations this node's lease should carry: flannel's, with the user's overrides of the public IPs. */
  private wanted(node: KubeNode, lease: Lease): Record<string, string> {
    const a = node.annotations;
    const n = this.names;
    const out: Record<string, string> = { [n.managed]: 'true', [n.backendType]: lease.attrs.backendType };
    const pick = (overwrite: string, nodeIp: string, flag: boolean, own: string | null, family: 4 | 6): string | null => {
      for (const [name, given] of [[overwrite, true], [nodeIp, !flag]] as const) {
        const v = a[name];
        if (!given || !v) continue;
        const ip = parseAddr(v);
        if (!ip || ip.family !== family) throw new StoreError('create', this.description, `node ${node.name}: annotation ${name}=${JSON.stringify(v)} is not an IPv${family} address`);
        return formatAddr(ip);
      }
      return own;
    };
    if (lease.subnet) {
      out[n.backendData] = JSON.stringify(lease.attrs.backendData ?? null);
      out[n.publicIp] = pick(n.publicIpOverwrite, n.nodePublicIp, this.publicIpFlags.ipv4, lease.attrs.publicIp, 4) ?? '';
    }
    if (lease.ipv6Subnet) {
      out[n.backendV6Data] = JSON.stringify(lease.attrs.backendV6Data ?? null);
      out[n.publicIpv6] = pick(n.publicIpv6Overwrite, n.nodePublicIpv6, this.publicIpFlags.ipv6, lease.attrs.publicIpv6, 6) ?? '';
    }
    return out;
  }

  /** Writes this node's annotations (when they differ) and its NetworkUnavailable condition. */
  private async write(op: string, lease: Lease, ttlMs: number | null, mustExist: boolean): Promise<StoredLease> {
    const key = leaseKey(lease);
    this.check(op, key);
    const name = this.ownName(op);
    if (ttlMs !== null) throw new StoreError(op, this.description, 'a node\'s lease does not expire: the TTL must be null (a lease lives as long as its Node)', key);
    const node = await this.getNode(op, name);
    if (!node) {
      if (mustExist) throw new LeaseGoneError(this.description, key, 'absent');
      throw new StoreError(op, this.description, `node "${name}" does not exist`, key);
    }
    if (mustExist && node.annotations[this.names.managed] !== 'true') throw new LeaseGoneError(this.description, key, 'absent');
    const { subnet, ipv6Subnet } = this.subnetsOf(node);
    const own = subnet || ipv6Subnet ? leaseKey({ subnet, ipv6Subnet }) : '(none)';
    if (own !== key) {
      throw new StoreError(op, this.description, `this store writes only node ${name}'s lease, for its pod CIDR ${node.podCidrs.join(', ') || '(none assigned)'} (key ${own}), not ${key}`, key);
    }
    const wanted = this.wanted(node, lease);
    let current = node;
    try {
      if (Object.entries(wanted).some(([k, v]) => node.annotations[k] !== v)) {
        // Through nodes/status, as flanneld: kube-flannel's RBAC grants nodes/status patch, not nodes patch.
        current = asNode(await this.client.call('PATCH', `${this.nodePath(name)}/status`, { metadata: { annotations: wanted } }, 'application/merge-patch+json'));
      }
      if (this.setCondition) current = await this.setNetworkAvailable(name);
    } catch (e) {
      throw this.wrap(op, key, e);
    }
    return this.stored(current, op);
  }

  /** flannel's setNodeNetworkUnavailableFalse: a strategic merge of one condition (merged by type). */
  private async setNetworkAvailable(name: string): Promise<KubeNode> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = { type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node', lastTransitionTime: now, lastHeartbeatTime: now };
    return asNode(await this.client.call('PATCH', `${this.nodePath(name)}/status`, { status: { conditions: [condition] } }, 'application/strategic-merge-patch+json'));
  }

  create(lease: Lease, ttlMs: number | null): Promise<StoredLease | null> {
    return this.write('create', lease, ttlMs, false);
  }

  /**
   * As create, for a node that still carries its lease. expectRevision is not
   * compared: a node's resourceVersion moves with every status update of the
   * kubelet, and only this node writes its own lease annotations.
   */
  renew(lease: Lease, ttlMs: number | null): Promise<StoredLease> {
    return this.write('renew', lease, ttlMs, true);
  }

  /** Removes this node's lease annotations (its podCIDR stays: the controller manager's). */
  async remove(key: string): Promise<boolean> {
    this.check('remove', key);
    const name = this.ownName('remove');
    const node = await this.getNode('remove', name);
    const l = node ? this.nodeLease(node) : null;
    if (!node || !l) return false;
    if (l.key !== key) throw new StoreError('remove', this.description, `this store removes only node ${name}'s own lease (${l.key})`, key);
    const n = this.names;
    const gone = Object.fromEntries([n.managed, n.backendType, n.backendData, n.backendV6Data, n.publicIp, n.publicIpv6].map((k) => [k, null]));
    await this.run('remove', key, () => this.client.call('PATCH', `${this.nodePath(name)}/status`, { metadata: { annotations: gone } }, 'application/merge-patch+json'));
    return true;
  }

  watch(fromRevision: number, onEvent: (e: WatchEvent) => void, onError: (e: Error) => void): Watcher {
    this.check('watch');
    // A watch from resourceVersion R delivers the changes after R.
    let rv = fromRevision - 1;
    let stream: KubeWatch | null = null;
    let stopped = false;
    const watcher: Watcher = {
      close: () => {
        if (stopped) return;
        stopped = true;
        stream?.close();
        this.watches.delete(watcher);
      },
    };
    const fail = (e: Error) => {
      if (stopped) return;
      watcher.close();
      onError(e);
    };
    const onKubeEvent = (raw: unknown) => {
      if (stopped) return;
      if (!isObj(raw) || typeof raw.type !== 'string') throw new StoreError('watch', this.description, `an event without a type: ${JSON.stringify(raw).slice(0, 200)}`);
      if (raw.type === 'ERROR') {
        const status = isObj(raw.object) ? raw.object : {};
        if (status.code === 410) throw new CompactedError(this.description, rv + 1, rv);
        throw new StoreError('watch', this.description, `the API server ended the watch: ${typeof status.message === 'string' ? status.message : JSON.stringify(status)}`);
      }
      const node = asNode(raw.object);
      const revision = this.revision(node.resourceVersion, 'watch');
      rv = Math.max(rv, revision);
      if (raw.type === 'BOOKMARK') return;
      const l = this.nodeLease(node);
      if (raw.type === 'DELETED' || !l) {
        // Deleted, or not (or no longer) a lease: gone under the key its pod CIDRs give (unknown keys are ignored by the manager).
        const { subnet, ipv6Subnet } = this.subnetsOf(node);
        const lease = l && !('error' in l) ? l.lease : undefined;
        if (subnet || ipv6Subnet) onEvent({ type: 'delete', key: leaseKey({ subnet, ipv6Subnet }), ...(lease ? { lease } : {}), revision });
        return;
      }
      if ('error' in l) onEvent({ type: 'put', key: l.key, error: l.error, revision });
      else onEvent({ type: 'put', key: l.key, lease: l.lease, revision });
    };
    let openedAt = 0;
    const open = () => {
      if (stopped) return;
      openedAt = Date.now();
      const path = `/api/v1/nodes?watch=true&allowWatchBookmarks=true&resourceVersion=${rv}&timeoutSeconds=${WATCH_SECONDS}`;
      stream = this.client.watch(path, onKubeEvent, (err) => {
        stream = null;
        if (stopped) return;
        // The server ended the request (timeoutSeconds): go on from where it was. At once again
        // (a server shutting down) is a failure, so the manager backs off rather than loop.
        if (err === null && Date.now() - openedAt > 1000) open();
        else if (err === null) fail(new StoreError('watch', this.description, 'the API server ended the watch at once (shutting down?)'));
        else if (err instanceof KubeApiError && err.status === 410) fail(new CompactedError(this.description, rv + 1, rv));
        else if (err instanceof StoreError) fail(err);
        else fail(this.wrap('watch', undefined, err));
      });
    };
    this.watches.add(watcher);
    open();
    return watcher;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watches]) w.close();
  }
}
