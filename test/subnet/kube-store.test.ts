// The Kubernetes store: where it connects (kubeconfig, --kube-api-url,
// in-cluster) and how a Node reads as a lease, without an API server; then
// the store itself against a real kube-apiserver (from a worker process in a
// test namespace: kube-worker.ts). The agent on it: test/agent/kube.test.ts.
import { describe, it, after, before } from 'node:test';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConnection, KubeConfigError } from '../../src/subnet/kube-client.js';
import { KubeStore, annotationNames, type KubeNode } from '../../src/subnet/kube-store.js';
import { StoreError } from '../../src/subnet/store.js';
import { TestHosts } from '../support/hosts.js';
import { KubeApiServer } from '../support/kube.js';

const dir = mkdtempSync(join(tmpdir(), 'twill-kube-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('kube store: connection', () => {
  it('a kubeconfig: current context, CA path relative to the file, token; --kube-api-url overrides the server', () => {
    file('ca.pem', 'CA');
    const kc = file('config', [
      'apiVersion: v1', 'kind: Config',
      'clusters:', '- name: c1', '  cluster: {server: "https://10.0.0.1:6443/", certificate-authority: ca.pem}',
      '- name: c2', '  cluster: {server: "https://10.0.0.2:6443"}',
      'users:', '- name: u', '  user: {token: abc}',
      'contexts:', '- name: one', '  context: {cluster: c1, user: u}', '- name: two', '  context: {cluster: c2, user: u}',
      'current-context: one', '',
    ].join('\n'));
    const c = resolveConnection({ apiUrl: null, kubeconfigFile: kc });
    assert.equal(c.server, 'https://10.0.0.1:6443');
    assert.equal(c.ca?.toString(), 'CA');
    assert.equal(c.token?.(), 'abc');
    assert.match(c.source, /context one/);
    assert.equal(resolveConnection({ apiUrl: 'https://10.9.9.9:443', kubeconfigFile: kc }).server, 'https://10.9.9.9:443');
  });

  it('in-cluster: KUBERNETES_SERVICE_HOST/PORT and the service account token, re-read on every call', () => {
    const sa = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(sa, 'token'), 't1\n');
    writeFileSync(join(sa, 'ca.crt'), 'CA');
    const c = resolveConnection({ apiUrl: null, kubeconfigFile: null, env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, serviceAccountDir: sa });
    assert.equal(c.server, 'https://[fd00::1]:443');
    assert.equal(c.token?.(), 't1');
    writeFileSync(join(sa, 'token'), 't2');
    assert.equal(c.token?.(), 't2');
  });

  it('clear errors: nothing to connect to, a missing file, exec credentials', () => {
    assert.throws(() => resolveConnection({ apiUrl: null, kubeconfigFile: null, env: {} }), (e: Error) => e instanceof KubeConfigError && /--kubeconfig-file/.test(e.message) && /KUBERNETES_SERVICE_HOST/.test(e.message));
    assert.throws(() => resolveConnection({ apiUrl: null, kubeconfigFile: join(dir, 'nope') }), /cannot read the kubeconfig .*nope/);
    const kc = file('exec', 'clusters: [{name: c, cluster: {server: "https://h:1"}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n');
    assert.throws(() => resolveConnection({ apiUrl: null, kubeconfigFile: kc }), /exec and auth-provider credentials are not supported/);
    // The store wraps it: the agent exits with the message.
    assert.throws(() => new KubeStore({ apiUrl: null, kubeconfigFile: null, env: {}, nodeName: 'n1' }), (e: Error) => e instanceof StoreError && /no Kubernetes API/.test(e.message));
  });
});

describe('kube store: a Node as a lease', () => {
  const store = new KubeStore({ apiUrl: 'https://10.0.0.1:6443', kubeconfigFile: null, nodeName: 'n1' });
  const n = annotationNames('flannel.alpha.coreos.com');
  const node = (annotations: Record<string, string>, podCidrs = ['10.244.3.0/24', 'fd00:10:244:3::/64']): KubeNode => ({ name: 'n3', resourceVersion: '42', annotations, podCidrs });
  const flannel = { [n.managed]: 'true', [n.backendType]: 'vxlan', [n.backendData]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:03"}', [n.publicIp]: '192.168.0.3', [n.backendV6Data]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:63"}', [n.publicIpv6]: 'fd18::3' };

  it('flannel\'s annotations and both pod CIDRs: one dual-stack lease under flannel\'s key', () => {
    const l = store.nodeLease(node(flannel));
    assert.ok(l && 'lease' in l);
    assert.equal(l.key, '10.244.3.0-24&fd00:10:244:3::-64');
    assert.deepEqual(l.lease.attrs, { publicIp: '192.168.0.3', publicIpv6: 'fd18::3', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:03' }, backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:00:63' } });
    assert.equal(l.lease.expiresAt, null);
  });

  it('not annotated kube-subnet-manager=true: no lease; malformed annotations: reported', () => {
    assert.equal(store.nodeLease(node({ ...flannel, [n.managed]: 'false' })), null);
    const bad = store.nodeLease(node({ ...flannel, [n.backendData]: '{not json' }));
    assert.ok(bad && 'error' in bad && /backend-data is not JSON/.test(bad.error), JSON.stringify(bad));
    const noCidr = store.nodeLease(node(flannel, []));
    assert.ok(noCidr && 'error' in noCidr && /has no pod CIDR/.test(noCidr.error));
    const badIp = store.nodeLease(node({ ...flannel, [n.publicIp]: 'fd18::3' }));
    assert.ok(badIp && 'error' in badIp && /not an IPv4 address/.test(badIp.error));
  });

  it('a custom --kube-annotation-prefix names every annotation', () => {
    const s = new KubeStore({ apiUrl: 'http://10.0.0.1:8080', kubeconfigFile: null, nodeName: null, annotationPrefix: 'example.com/' });
    assert.equal(s.names.managed, 'example.com/kube-subnet-manager');
    assert.equal(s.nodeLease(node(flannel)), null, 'flannel\'s prefix is not this store\'s');
    assert.throws(() => new KubeStore({ apiUrl: 'http://h:1', kubeconfigFile: null, nodeName: null, annotationPrefix: 'bad prefix!' }), /not an annotation prefix/);
  });
});

describe('kube store: against kube-apiserver', () => {
  const hosts = new TestHosts();
  let api: KubeApiServer;
  let worker: string;
  before(async () => {
    const { hosts: h } = await hosts.underlay({ k: '198.18.0.101/24', w: '198.18.0.1/24' });
    worker = h.w!.name;
    // No watch cache: a fresh cache answers a watch from an old resourceVersion with the current
    // objects as ADDED; straight from a compacted etcd it is 410 Gone, which this test is about.
    api = await KubeApiServer.start(h.k!.name, '198.18.0.101', { extraArgs: ['--watch-cache=false'] });
    await api.createNode({ name: 'w1', podCidrs: ['10.245.1.0/24'] });
    await api.createNode({ name: 'peer', podCidrs: ['10.245.2.0/24'], annotations: { 'flannel.alpha.coreos.com/kube-subnet-manager': 'true', 'flannel.alpha.coreos.com/backend-type': 'host-gw', 'flannel.alpha.coreos.com/backend-data': 'null', 'flannel.alpha.coreos.com/public-ip': '198.18.0.2' } });
  });
  after(async () => {
    await api?.destroy();
    await hosts.cleanup();
  });

  it('create only for its own pod CIDR and without TTL; list, watch from the revision, 410 Gone as CompactedError, remove, renew after removal', async () => {
    // History before now is gone: the worker's watch from revision 2 must get 410 Gone.
    await api.compactEtcd();
    const script = fileURLToPath(new URL('./kube-worker.js', import.meta.url));
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('ip', ['netns', 'exec', worker, process.execPath, script, api.kubeconfig, 'w1'], { timeout: 60_000 }, (err, out, errText) => (err ? reject(new Error(`kube-worker: ${err.message}\n${errText}`)) : resolve(out)));
    });
    const r = JSON.parse(stdout) as Record<string, unknown>;
    assert.match(String(r.wrongSubnet), /^StoreError: .*writes only node w1's lease, for its pod CIDR 10\.245\.1\.0\/24/);
    assert.match(String(r.withTtl), /^StoreError: .*does not expire/);
    assert.deepEqual(r.created, { key: '10.245.1.0-24', publicIp: '198.18.0.1', expiresAt: null });
    assert.deepEqual(r.listed, ['10.245.1.0-24', '10.245.2.0-24']);
    assert.equal(r.revisionIsNumber, true);
    assert.deepEqual(r.events, [{ type: 'delete', key: '10.245.2.0-24', after: true }]);
    assert.equal(r.ancient, 'CompactedError');
    assert.match(String(r.othersKey), /^StoreError: .*removes only node w1's own lease/);
    assert.equal(r.removed, true);
    assert.deepEqual(r.afterRemove, []);
    assert.equal(r.renewGone, 'LeaseGoneError');
    const a = (await api.getNode('w1')).metadata.annotations ?? {};
    assert.deepEqual(Object.keys(a).filter((k) => k.startsWith('flannel.alpha.coreos.com/')), [], 'remove took every lease annotation off');
  });
});
