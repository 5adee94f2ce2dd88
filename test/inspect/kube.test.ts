// `twill explain --store kube`: the cluster's Nodes are the leases, as for
// agents run with --kube-subnet-mgr. Three node namespaces run real agents on
// a real kube-apiserver (RBAC, audit log; the agents with the manifest's
// ServiceAccount); explain runs inside a node's namespace with a token of its
// own, bound to nothing but "list" on "nodes", so the audit log tells its calls
// from the agents' and any write would be refused and recorded. It must read
// the peers' leases (by node name), find what a node lacks, and write nothing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { TestCluster, eventually, type ClusterNode } from '../agent/cluster.js';
import { BIN_TWILL } from '../support/agent.js';
import { ipJson } from '../support/exec.js';
import { KubeApiServer } from '../support/kube.js';
import type { Explanation, FindingId } from '../../src/inspect/model.js';

const MANIFEST = fileURLToPath(new URL('../../../deploy/kube-twill.yml', import.meta.url));
const API_IP = '198.18.0.101';
const NS = 'kube-twill';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `twill explain ARGS` inside a namespace (where the API is reachable, as on a node), with only `env` (and PATH) set. */
function explainIn(netns: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', netns, process.execPath, BIN_TWILL, 'explain', ...args], {
      maxBuffer: 64 << 20, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
}

/** The ids of what is not merely informational. */
const problems = (e: Explanation): FindingId[] => e.findings.filter((f) => f.severity !== 'info').map((f) => f.id);
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe('twill explain --store kube: three agents on a kube-apiserver, the Nodes\' leases as the truth', () => {
  const c = new TestCluster({ nodes: 3, extra: ['k'] });
  let api: KubeApiServer;
  let n1: ClusterNode, n2: ClusterNode;
  /** explain's own identity: a ServiceAccount that may only list nodes. */
  let explainKubeconfig: string;
  const EXPLAIN_USER = `system:serviceaccount:${NS}:explain`;
  /** n2 as n1 must know it. */
  let peer: { subnet: string; gw: string; mac: string };
  const base = (n: ClusterNode) => ['--subnet-file', n.subnetFile, '--cni-data-dir', join(c.tmp.dir, 'no-cni')];
  const resourceVersions = async () => Promise.all(c.nodes.map(async (n) => (await api.getNode(n.name)).metadata.resourceVersion));

  before(async () => {
    await c.build();
    [n1, n2] = c.nodes as [ClusterNode, ClusterNode];
    api = await KubeApiServer.start(c.extra.k!.name, API_IP, { authorization: 'Node,RBAC', audit: true });
    const manifest = (yaml.loadAll(readFileSync(MANIFEST, 'utf8')) as ({ kind: string } | null)[]).filter((o) => o !== null) as Parameters<KubeApiServer['apply']>[0];
    await api.apply(manifest.filter((o) => ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)));
    for (const [i, n] of c.nodes.entries()) await api.createNode({ name: n.name, podCidrs: [`10.244.${i + 1}.0/24`] });
    const agentKubeconfig = api.writeKubeconfig('twill.kubeconfig', await api.tokenFor(NS, 'twill'));

    await api.ok('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'explain', namespace: NS } });
    await api.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'twill-explain' },
      rules: [{ apiGroups: [''], resources: ['nodes'], verbs: ['list'] }],
    });
    await api.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'twill-explain' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'twill-explain' },
      subjects: [{ kind: 'ServiceAccount', name: 'explain', namespace: NS }],
    });
    const token = await api.tokenFor(NS, 'explain');
    explainKubeconfig = api.writeKubeconfig('explain.kubeconfig', token);
    // RBAC's authorizer sees a new binding through its informer: wait until it applies.
    await eventually(async () => assert.equal((await api.request('GET', '/api/v1/nodes', undefined, undefined, token)).status, 200), 10_000, 100);

    // br_netfilter's switch, per namespace, as a node has it set (else br-netfilter-missing on every node).
    for (const n of c.nodes) n.host.handle.writeSysctl('net.bridge.bridge-nf-call-iptables', '1');
    const netConf = c.tmp.netConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    await Promise.all(c.nodes.map((n) => c.start(n, ['--store', 'kube', '--net-conf', netConf, '--kubeconfig-file', agentKubeconfig, '--ip-masq']).ready(30_000)));
    for (const n of c.nodes) await eventually(async () => assert.equal((await c.routesVia(n, 'flannel.1')).length, 2));
    const [dev] = await ipJson<{ address: string }[]>(n2.host.name, ['link', 'show', 'flannel.1']);
    peer = { subnet: '10.244.2.0/24', gw: '10.244.2.0', mac: dev!.address };
  });
  after(async () => {
    await api?.destroy();
    await c.cleanup();
  });

  it('--help documents the kube flags; --store kube with no API to talk to is a usage error (exit 2)', async () => {
    const help = await explainIn(n1.host.name, ['--help']);
    assert.equal(help.code, 0, help.stderr);
    for (const flag of ['--store <SPEC>', '--kube-subnet-mgr', '--kubeconfig-file <FILE>', '--kube-api-url <URL>', '--kube-annotation-prefix <P>', '--node-name <NAME>']) {
      assert.ok(help.stdout.includes(flag), `--help lists ${flag}`);
    }
    // Commander wraps the descriptions at 80 columns.
    assert.match(help.stdout, /local:PATH \|\s+etcd:URL\[,URL\] \| kube/);
    assert.match(help.stdout, /--node-name <NAME>[^]*\(env:\s+NODE_NAME\)/);
    assert.match(help.stdout, /twill explain --store kube --kubeconfig-file/);
    const none = await explainIn(n1.host.name, ['--store', 'kube', ...base(n1)]);
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /twill explain: kube: open: no Kubernetes API to talk to: give --kubeconfig-file FILE or --kube-api-url URL, or run in a pod/);
    assert.equal(none.stdout, '');
  });

  it('healthy: the three Nodes\' leases, named, this node\'s own by --node-name (or NODE_NAME with --kube-subnet-mgr); no problem; exit 0', async () => {
    const before = await resourceVersions();
    const r = await explainIn(n1.host.name, ['--store', 'kube', '--kubeconfig-file', explainKubeconfig, '--node-name', 'n1', ...base(n1), '--format', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout) as Explanation;
    assert.equal(e.store?.error, null);
    assert.equal(e.store?.description, `kube:https://${API_IP}:6443`);
    assert.deepEqual(problems(e), [], JSON.stringify(e.findings, null, 2));
    const leases = [...e.store!.leases].sort((a, b) => a.key.localeCompare(b.key));
    assert.deepEqual(leases.map((l) => [l.key, l.node, l.publicIp, l.backendType, l.expiresAt, l.own]), [
      ['10.244.1.0-24', 'n1', n1.ip, 'vxlan', null, true],
      ['10.244.2.0-24', 'n2', n2.ip, 'vxlan', null, false],
      ['10.244.3.0-24', 'n3', c.nodes[2]!.ip, 'vxlan', null, false],
    ]);
    assert.equal(leases[1]!.vtepMac, peer.mac);
    // flannel's flag and the DaemonSet's variable, on another node.
    const flannelStyle = await explainIn(n2.host.name, ['--kube-subnet-mgr', '--kubeconfig-file', explainKubeconfig, ...base(n2), '--format', 'json'], { NODE_NAME: 'n2' });
    assert.equal(flannelStyle.code, 0, flannelStyle.stderr);
    assert.deepEqual((JSON.parse(flannelStyle.stdout) as Explanation).store!.leases.filter((l) => l.own).map((l) => l.node), ['n2']);
    assert.deepEqual(await resourceVersions(), before, 'no Node changed');
  });

  it('a route missing on n1 (its agent stopped): missing-route for node n2, exit 1; the text names the leases by node', async () => {
    assert.equal(await n1.agent!.stop(), 0);
    const route = { dst: peer.subnet, gateway: peer.gw, device: 'flannel.1', onlink: true, protocol: 87 };
    await n1.host.handle.deleteRoute(route);
    const before = await resourceVersions();
    try {
      const args = ['--store', 'kube', '--kubeconfig-file', explainKubeconfig, '--node-name', 'n1', ...base(n1)];
      const json = await explainIn(n1.host.name, [...args, '--format', 'json']);
      assert.equal(json.code, 1, json.stderr);
      const e = JSON.parse(json.stdout) as Explanation;
      assert.deepEqual(problems(e), ['missing-route'], JSON.stringify(e.findings, null, 2));
      const f = e.findings.find((x) => x.id === 'missing-route')!;
      assert.equal(f.subject, `route ${peer.subnet}`);
      assert.match(f.message, new RegExp(`belongs to node n2 at ${esc(n2.ip!)} \\(lease 10\\.244\\.2\\.0-24\\)`));
      const text = await explainIn(n1.host.name, args);
      assert.equal(text.code, 1, text.stderr);
      assert.match(text.stdout, new RegExp(`store kube:https://${esc(API_IP)}:6443: 3 leases at revision \\d+, this node's 10\\.244\\.1\\.0/24`));
      assert.match(text.stdout, new RegExp(`lease 10\\.244\\.2\\.0-24: node n2 at ${esc(n2.ip!)} vxlan VtepMAC ${peer.mac}`));
    } finally {
      await n1.host.handle.addRoute(route);
    }
    assert.deepEqual(await resourceVersions(), before, 'no Node changed');
    const healed = await explainIn(n1.host.name, ['--store', 'kube', '--kubeconfig-file', explainKubeconfig, '--node-name', 'n1', ...base(n1), '--format', 'json']);
    assert.equal(healed.code, 0, healed.stderr);
  });

  it('explain only reads: its every call is "list nodes", all allowed (the audit log), though the agents\' calls are there too', () => {
    const mine = api.auditEvents(EXPLAIN_USER, 'twill');
    // 4 JSON or text runs above (the usage error never reached the API).
    assert.ok(mine.length >= 4, `explain's calls in the audit log: ${mine.length}`);
    assert.deepEqual([...new Set(mine.map((x) => `${x.code} ${x.verb} ${x.resource}`))], ['200 list nodes']);
    const agents = new Set(api.auditEvents(`system:serviceaccount:${NS}:twill`, 'twill').map((x) => `${x.verb} ${x.resource}`));
    assert.ok(agents.has('patch nodes/status'), 'the audit log does record writes (the agents\')');
  });

  it('credentials that may not list nodes: store-unreadable naming "list" on "nodes" and the ClusterRole, exit 1', async () => {
    await api.ok('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: NS } });
    const kubeconfig = api.writeKubeconfig('nobody.kubeconfig', await api.tokenFor(NS, 'nobody'));
    const r = await explainIn(n1.host.name, ['--store', 'kube', '--kubeconfig-file', kubeconfig, '--node-name', 'n1', ...base(n1), '--format', 'json']);
    assert.equal(r.code, 1, r.stderr);
    const e = JSON.parse(r.stdout) as Explanation;
    assert.deepEqual(problems(e), ['store-unreadable']);
    const f = e.findings.find((x) => x.id === 'store-unreadable')!;
    assert.match(f.message, /user "system:serviceaccount:kube-twill:nobody" may not "list" on "nodes"/);
    assert.match(f.message, /twill explain needs "list" on "nodes" \(the ClusterRole "twill" of deploy\/kube-twill\.yml has it\)\. Bind it: kubectl create clusterrolebinding twill-nobody --clusterrole=twill --serviceaccount=kube-twill:nobody/);
  });
});
