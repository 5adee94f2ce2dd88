// deploy/kube-twill.yml applied for real to a kube-apiserver (v1.37.2, built by
// the peers script): every object is accepted and reads back as written, and
// what the DaemonSet hands the agent and the CNI runtime is what twill expects.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { TestHosts } from '../support/hosts.js';
import { KubeApiServer, collectionOf as collection } from '../support/kube.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';

const MANIFEST = fileURLToPath(new URL('../../../deploy/kube-twill.yml', import.meta.url));

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
}

describe('deploy/kube-twill.yml on a real kube-apiserver', () => {
  const hosts = new TestHosts();
  let api: KubeApiServer;
  const objects = (yaml.loadAll(readFileSync(MANIFEST, 'utf8')) as (KubeObject | null)[]).filter((o): o is KubeObject => o !== null);
  before(async () => {
    await hosts.underlay({ k: '198.18.0.101/24' });
    api = await KubeApiServer.start(`${hosts.prefix}-k`, '198.18.0.101');
  });
  after(async () => {
    await api?.destroy();
    await hosts.cleanup();
  });

  it('every object is accepted and reads back', async () => {
    assert.deepEqual(objects.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet']);
    for (const o of objects) await api.ok('POST', collection(o), o);
    for (const o of objects) {
      const back = (await api.ok('GET', `${collection(o)}/${o.metadata.name}`)) as KubeObject;
      assert.equal(back.metadata.name, o.metadata.name);
      assert.equal(back.kind, o.kind);
    }
  });

  it('flannel\'s minimal rights: nodes read and watched, nodes/status patched, its own pod read', async () => {
    const role = (await api.ok('GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles/twill')) as { rules: { resources: string[]; verbs: string[] }[] };
    const rights = Object.fromEntries(role.rules.map((r) => [r.resources.join(','), [...r.verbs].sort()]));
    assert.deepEqual(rights, { pods: ['get'], nodes: ['get', 'list', 'watch'], 'nodes/status': ['patch'] });
  });

  it('the ConfigMap holds a net-conf.json twill accepts and kube-flannel\'s conflist', async () => {
    const cm = (await api.ok('GET', '/api/v1/namespaces/kube-twill/configmaps/kube-twill-cfg')) as { data: Record<string, string> };
    const net = parseNetworkConfig(cm.data['net-conf.json']!);
    assert.equal(net.backend.type, 'vxlan');
    assert.deepEqual(JSON.parse(cm.data['cni-conf.json']!), {
      name: 'cbr0', cniVersion: '0.3.1',
      plugins: [{ type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } }, { type: 'portmap', capabilities: { portMappings: true } }],
    });
  });

  it('the DaemonSet: host network, NET_ADMIN + NET_RAW, the kube store, probes on the node\'s address, CNI installed by init containers', async () => {
    const ds = (await api.ok('GET', '/apis/apps/v1/namespaces/kube-twill/daemonsets/kube-twill-ds')) as {
      spec: { template: { spec: {
        hostNetwork: boolean; priorityClassName: string; serviceAccountName: string;
        initContainers: { name: string; image: string; command: string[] }[];
        containers: { image: string; command: string[]; securityContext: { capabilities: { add: string[] } }; readinessProbe: { httpGet: { path: string; port: number } }; livenessProbe: { httpGet: { path: string } }; env: { name: string }[] }[];
      } } };
    };
    const pod = ds.spec.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.priorityClassName, 'system-node-critical');
    assert.equal(pod.serviceAccountName, 'twill');
    const agent = pod.containers[0]!;
    assert.deepEqual(agent.command.slice(0, 4), ['twill', 'agent', '--store=kube', '--net-conf=/etc/kube-flannel/net-conf.json']);
    assert.ok(agent.command.includes('--healthz-ip=$(POD_IP)') && agent.command.includes('--healthz-port=9099'));
    assert.deepEqual([...agent.securityContext.capabilities.add].sort(), ['NET_ADMIN', 'NET_RAW']);
    assert.deepEqual([agent.readinessProbe.httpGet.path, agent.readinessProbe.httpGet.port, agent.livenessProbe.httpGet.path], ['/readyz', 9099, '/healthz']);
    assert.ok(agent.env.some((e) => e.name === 'NODE_NAME'));
    assert.deepEqual(pod.initContainers.map((c) => c.name), ['install-cni-plugins', 'install-cni-conf']);
    assert.deepEqual(pod.initContainers[0]!.command, ['twill', 'cni', 'install', '--dir', '/host/opt/cni/bin']);
    assert.match(pod.initContainers[1]!.command.join(' '), /cp .* \/host\/etc\/cni\/net\.d\/\.10-flannel\.conflist\.tmp && mv .* \/host\/etc\/cni\/net\.d\/10-flannel\.conflist/);
    // The name scripts/build-image.sh gives the image (and its OCI archive), at this version: what a node that loaded it has.
    const { version } = JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as { version: string };
    assert.deepEqual([...pod.initContainers, ...pod.containers].map((c) => c.image), Array(3).fill(`localhost/twill:${version}`));
  });

  it('the agent\'s flags in the DaemonSet are ones it understands', async () => {
    const ds = objects.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { containers: { command: string[] }[] } } } };
    const args = ds.spec.template.spec.containers[0]!.command.slice(2).map((a) => a.replace('$(POD_IP)', '10.0.0.7'));
    const { execFile } = await import('node:child_process');
    const bin = fileURLToPath(new URL('../../../bin/twill', import.meta.url));
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [bin, 'agent', ...args, '--print-options'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_NAME: 'node-a' } }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout))),
    );
    const o = JSON.parse(out) as { store: { kind: string }; healthzIp: string; healthzPort: number; ipMasq: boolean; netConfPath: string };
    assert.deepEqual([o.store.kind, o.healthzIp, o.healthzPort, o.ipMasq, o.netConfPath], ['kube', '10.0.0.7', 9099, true, '/etc/kube-flannel/net-conf.json']);
  });
});
