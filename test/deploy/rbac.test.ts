// The rights of deploy/kube-twill.yml are enough for the agent, and nothing
// else lets it in: a kube-apiserver with --authorization-mode=Node,RBAC (as
// kubeadm runs it), the manifest's Namespace, ServiceAccount, ClusterRole and
// ClusterRoleBinding applied as they are, and real `twill agent --store kube`
// processes in node namespaces with a kubeconfig holding that ServiceAccount's
// token (TokenRequest, as the kubelet gets a pod's token). The API server's
// audit log says which calls the agent made and what each got: every one must
// be allowed, and within the ClusterRole. Then credentials without the binding,
// with only part of the rights, and unknown to the server: the agent must stop
// at once with a message that names the missing right and how to grant it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { TestCluster, eventually, type ClusterNode } from '../agent/cluster.js';
import { KubeApiServer, type AuditEvent } from '../support/kube.js';
import type { AgentProcess } from '../support/agent.js';

const MANIFEST = fileURLToPath(new URL('../../../deploy/kube-twill.yml', import.meta.url));
const A = 'flannel.alpha.coreos.com';
const API_IP = '198.18.0.101';
const NS = 'kube-twill';

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
}

const objects = (yaml.loadAll(readFileSync(MANIFEST, 'utf8')) as (KubeObject | null)[]).filter((o): o is KubeObject => o !== null);
/** What RBAC is made of in the manifest, applied as it is (the ConfigMap and DaemonSet need no part here). */
const rbacObjects = objects.filter((o) => ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind));

/** The ClusterRole's rights as "verb resource" ("patch nodes/status"). */
function rightsOf(role: KubeObject): Set<string> {
  return new Set((role.rules ?? []).flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${v} ${res}`))));
}

/** The calls twill made as a service account (not the test's own curl calls with the same token). */
const twillCalls = (api: KubeApiServer, name: string) => api.auditEvents(`system:serviceaccount:${NS}:${name}`, 'twill');
/** The agent's exit code; fails (with its log) when it is still running after timeoutMs: a refusal must not be retried. */
async function exitCode(agent: AgentProcess, timeoutMs = 20_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => void agent.kill().then(() => reject(new Error(`the agent still ran after ${timeoutMs} ms (killed):\n${agent.stderr}`))), timeoutMs);
  });
  try {
    return await Promise.race([agent.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const calls = (events: AuditEvent[]) => [...new Set(events.map((e) => `${e.verb} ${e.resource}`))].sort();

describe('deploy/kube-twill.yml\'s RBAC: twill agent with exactly the ClusterRole\'s rights (kube-apiserver --authorization-mode=Node,RBAC)', () => {
  const c = new TestCluster({ nodes: 3, extra: ['k'] });
  let api: KubeApiServer;
  let n1: ClusterNode, n2: ClusterNode, n3: ClusterNode;
  let netConf: string;
  const kubeArgs = (kubeconfig: string) => ['--store', 'kube', '--net-conf', netConf, '--kubeconfig-file', kubeconfig, '--ip-masq'];

  /** A ServiceAccount in the manifest's namespace and a kubeconfig with a token for it. */
  async function serviceAccount(name: string): Promise<string> {
    await api.ok('POST', `/api/v1/namespaces/${NS}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } });
    return api.writeKubeconfig(`${name}.kubeconfig`, await api.tokenFor(NS, name));
  }

  before(async () => {
    await c.build();
    [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    api = await KubeApiServer.start(c.extra.k!.name, API_IP, { authorization: 'Node,RBAC', audit: true });
    console.log(`# kube-apiserver (Node,RBAC, audit) ready in ${api.startTimes[0]} ms`);
    netConf = c.tmp.netConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    assert.deepEqual(rbacObjects.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);
    await api.apply(rbacObjects);
    for (const [i, n] of c.nodes.entries()) await api.createNode({ name: n.name, podCidrs: [`10.244.${i + 1}.0/24`] });
  });
  after(async () => {
    await api?.destroy();
    await c.cleanup();
  });

  it('the server enforces RBAC: the manifest\'s service account may list nodes, not read ConfigMaps or Secrets', async () => {
    const token = await api.tokenFor(NS, 'twill');
    assert.equal((await api.request('GET', '/api/v1/nodes', undefined, undefined, token)).status, 200);
    const cm = await api.request('GET', `/api/v1/namespaces/${NS}/configmaps`, undefined, undefined, token);
    assert.equal(cm.status, 403, cm.text);
    assert.equal((await api.request('GET', '/api/v1/secrets', undefined, undefined, token)).status, 403);
  });

  it('two agents with the manifest\'s service account: leases from the podCIDRs, annotations, NetworkUnavailable=False, each other and a node added later as peers; every call allowed, all within the ClusterRole', async () => {
    const kubeconfig = api.writeKubeconfig('twill.kubeconfig', await api.tokenFor(NS, 'twill'));
    const t0 = Date.now();
    await Promise.all([c.start(n1, kubeArgs(kubeconfig)).ready(30_000), c.start(n2, kubeArgs(kubeconfig)).ready(30_000)]);
    console.log(`# two agents ready under RBAC in ${Date.now() - t0} ms`);
    assert.equal(c.subnetEnv(n1).FLANNEL_SUBNET, '10.244.1.1/24');
    assert.equal(c.subnetEnv(n2).FLANNEL_SUBNET, '10.244.2.1/24');
    for (const n of [n1, n2]) {
      const node = await api.getNode(n.name);
      const a = node.metadata.annotations ?? {};
      assert.deepEqual([a[`${A}/kube-subnet-manager`], a[`${A}/backend-type`], a[`${A}/public-ip`]], ['true', 'vxlan', n.ip]);
      assert.match(a[`${A}/backend-data`] ?? '', /^\{"VNI":1,"VtepMAC":"([0-9a-f]{2}:){5}[0-9a-f]{2}"\}$/);
      const cond = node.status?.conditions?.find((x) => x.type === 'NetworkUnavailable');
      assert.deepEqual([cond?.status, cond?.reason], ['False', 'FlannelIsUp']);
    }
    await eventually(async () => assert.deepEqual(await c.routesVia(n1, 'flannel.1'), ['10.244.2.0/24']));
    await eventually(async () => assert.deepEqual(await c.routesVia(n2, 'flannel.1'), ['10.244.1.0/24']));
    // Through the watch: a node that joins after the agents started.
    await api.createNode({
      name: 'x9', podCidrs: ['10.244.9.0/24'],
      annotations: { [`${A}/kube-subnet-manager`]: 'true', [`${A}/backend-type`]: 'vxlan', [`${A}/backend-data`]: '{"VNI":1,"VtepMAC":"0a:99:00:00:00:01"}', [`${A}/public-ip`]: '198.18.0.99' },
    });
    for (const n of [n1, n2]) await eventually(async () => assert.ok((await c.routesVia(n, 'flannel.1')).includes('10.244.9.0/24')), 10_000);
    await api.deleteNode('x9');
    for (const n of [n1, n2]) await eventually(async () => assert.ok(!(await c.routesVia(n, 'flannel.1')).includes('10.244.9.0/24')), 10_000);
    for (const n of [n1, n2]) assert.equal(n.agent!.logs.some((l) => l.level >= 40), false, `no warning or error on ${n.name}:\n${n.agent!.stderr}`);

    const events = twillCalls(api, 'twill');
    const refused = events.filter((e) => e.code >= 400);
    assert.deepEqual(refused.map((e) => `${e.code} ${e.verb} ${e.requestURI}`), [], 'every call of the agents is allowed');
    const made = calls(events);
    console.log(`# the agents' API calls: ${made.join(', ')} (${events.length} requests)`);
    // Each right the agent needs is used (so the audit log does show them), and none beyond the ClusterRole.
    assert.deepEqual(made, ['get nodes', 'list nodes', 'patch nodes/status', 'watch nodes']);
    const granted = rightsOf(objects.find((o) => o.kind === 'ClusterRole')!);
    for (const call of made) assert.ok(granted.has(call), `${call} is not granted by the ClusterRole`);
  });

  it('a service account without the binding: the agent stops at once (exit 1), naming "get" on "nodes", the ClusterRole and the command that binds it; nothing written', async () => {
    const kubeconfig = await serviceAccount('nobody');
    const t0 = Date.now();
    const agent = c.start(n3, kubeArgs(kubeconfig));
    assert.equal(await exitCode(agent), 1, agent.stderr);
    console.log(`# refused agent exited in ${Date.now() - t0} ms`);
    const message = agent.stderr.split('\n').find((l) => l.startsWith('twill agent: ')) ?? '';
    console.log(`# ${message}`);
    assert.match(message, /forbidden: user "system:serviceaccount:kube-twill:nobody" may not "get" on "nodes" \(the API server said 403 Forbidden: /);
    assert.match(message, /The agent needs "get", "list" and "watch" on "nodes" and "patch" on "nodes\/status", the rights of the ClusterRole "twill" in deploy\/kube-twill\.yml/);
    assert.match(message, /kubectl create clusterrolebinding twill-nobody --clusterrole=twill --serviceaccount=kube-twill:nobody$/);
    assert.equal(agent.logs.some((l) => /retrying/.test(l.msg)), false, 'a refusal is not retried');
    const a = (await api.getNode('n3')).metadata.annotations ?? {};
    assert.equal(a[`${A}/kube-subnet-manager`], undefined, 'no annotation written');
    const events = twillCalls(api, 'nobody');
    assert.deepEqual(events.map((e) => `${e.code} ${e.verb} ${e.resource}`), ['403 get nodes'], 'one refused call, then it stopped');
  });

  it('a role without list and watch: the lease is written, then the agent stops before it is ready, naming "list" on "nodes"', async () => {
    await api.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'twill-partial' },
      rules: [{ apiGroups: [''], resources: ['nodes'], verbs: ['get'] }, { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] }],
    });
    const kubeconfig = await serviceAccount('partial');
    await api.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'twill-partial' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'twill-partial' },
      subjects: [{ kind: 'ServiceAccount', name: 'partial', namespace: NS }],
    });
    // RBAC's authorizer sees a new binding through its informer: wait until the server applies it.
    const token = await api.tokenFor(NS, 'partial');
    await eventually(async () => assert.equal((await api.request('GET', '/api/v1/nodes/n3', undefined, undefined, token)).status, 200), 10_000, 100);
    const agent = c.start(n3, kubeArgs(kubeconfig));
    assert.equal(await exitCode(agent), 1, agent.stderr);
    assert.equal(agent.logs.some((l) => l.msg === 'ready'), false, 'never ready');
    assert.match(agent.stderr, /twill agent: .*forbidden: user "system:serviceaccount:kube-twill:partial" may not "list" on "nodes".*--serviceaccount=kube-twill:partial/);
    const made = twillCalls(api, 'partial');
    assert.deepEqual(calls(made.filter((e) => e.code < 400)), ['get nodes', 'patch nodes/status']);
    assert.deepEqual(calls(made.filter((e) => e.code >= 400)), ['list nodes']);
  });

  it('a token the API server does not know: exit 1, "does not accept the credentials", what to give instead', async () => {
    const kubeconfig = api.writeKubeconfig('bogus.kubeconfig', 'not-a-token-the-server-knows');
    const agent = c.start(n3, kubeArgs(kubeconfig));
    assert.equal(await exitCode(agent), 1, agent.stderr);
    assert.match(agent.stderr, /twill agent: .*the API server does not accept the credentials of kubeconfig .*bogus\.kubeconfig .*\(401 Unauthorized: Unauthorized\).*Give credentials it knows/);
  });
});
