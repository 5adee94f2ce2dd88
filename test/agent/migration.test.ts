// Moving a node from flanneld to twill, and back, with the real flanneld
// v0.28.9 on a shared etcd: twill adopts what flanneld left (flannel.1 and
// its MAC, the lease, subnet.env, the rules, cni0), pods made under flannel by
// the reference plugins keep talking through the switch and can be deleted
// by twill's plugins; then flanneld takes the node back.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TestCluster, eventually, type ClusterNode, type Pod } from './cluster.js';
import { EtcdCluster } from '../support/etcd.js';
import { EtcdClientProcess } from '../support/etcd-client.js';
import { FlanneldProcess, requireFlanneld } from '../support/flanneld.js';
import { REFERENCE_V1_10, requireReference } from '../support/cni.js';
import { ipJson, run } from '../support/exec.js';
import { pingStream } from '../support/traffic.js';

const PREFIX = '/coreos.com/network';


const iptablesSave = async (n: ClusterNode) =>
  (await run('ip', ['netns', 'exec', n.host.name, 'iptables-save'])).split('\n').filter((l) => /FLANNEL/.test(l) && !l.startsWith('#')).sort();

describe('moving a node from flanneld to twill and back (etcd)', () => {
  const c = new TestCluster({ nodes: 2, extra: ['e1'] });
  let etcd: EtcdCluster;
  let client: EtcdClientProcess;
  let n1: ClusterNode, n2: ClusterNode;
  const flannelds: FlanneldProcess[] = [];
  const pods: Pod[] = [];
  let endpoints: string;
  const startFlanneld = async (n: ClusterNode) => {
    const f = new FlanneldProcess(n.host, [`--etcd-endpoints=${endpoints}`, '--iface=eth0', `--subnet-file=${n.subnetFile}`, '--ip-masq']);
    flannelds.push(f);
    await f.waitFor(/Running backend/);
    return f;
  };

  before(async () => {
    requireFlanneld();
    requireReference(REFERENCE_V1_10);
    await c.build();
    [n1, n2] = c.nodes as [ClusterNode, ClusterNode];
    etcd = await EtcdCluster.start({ placements: [{ netns: c.extra.e1!.name, ip: '198.18.0.101' }] });
    endpoints = etcd.endpoints.join(',');
    client = new EtcdClientProcess(c.extra.e1!.name, etcd.endpoints);
    await client.put(`${PREFIX}/config`, JSON.stringify({ Network: '10.251.0.0/16', Backend: { Type: 'vxlan' } }));
  });
  after(async () => {
    for (const f of flannelds) await f.stop('SIGKILL');
    await client?.close();
    await etcd?.destroy();
    await c.cleanup();
  });

  it('a flannel cluster: flanneld on both nodes, pods made by the reference plugins', async () => {
    await startFlanneld(n1);
    await startFlanneld(n2);
    pods.push(await c.addPod(n1, REFERENCE_V1_10), await c.addPod(n2, REFERENCE_V1_10));
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
  });

  it('twill takes n1 over: same flannel.1 and MAC, same lease and subnet.env, same rules, not one packet lost', async () => {
    const env = readFileSync(n1.subnetFile, 'utf8');
    const [dev] = await ipJson<{ address: string; ifindex: number }[]>(n1.host.name, ['link', 'show', 'flannel.1']);
    const rules = await iptablesSave(n1);
    const stream = pingStream(pods[1]!.host, pods[0]!.ip!, 150, 0.02);
    await new Promise((r) => setTimeout(r, 500));
    await flannelds[0]!.stop('SIGTERM');
    const agent = c.start(n1, ['--store', `etcd:${endpoints}`, '--ip-masq']);
    assert.equal((await agent.waitFor('acquired lease', 30_000)).how, 'own-lease', 'the lease flanneld held, found by public IP');
    await agent.ready(30_000);
    const { sent, received } = await stream;
    assert.equal(received, sent, `${sent - received} of ${sent} packets lost during the switch`);
    assert.equal(readFileSync(n1.subnetFile, 'utf8'), env, 'subnet.env as flanneld wrote it');
    const [dev2] = await ipJson<{ address: string; ifindex: number }[]>(n1.host.name, ['link', 'show', 'flannel.1']);
    assert.deepEqual([dev2!.ifindex, dev2!.address], [dev!.ifindex, dev!.address], 'flannel.1 kept, with its MAC');
    assert.deepEqual(await iptablesSave(n1), rules, 'flannel\'s chains are twill\'s: nothing to change');
    const { kvs } = await client.get(`${PREFIX}/subnets/`);
    assert.equal(kvs.length, 2, 'no second lease for n1');
  });

  it('pods made under flannel work with twill, and twill\'s plugins delete them; a new pod works too', async () => {
    const fresh = await c.addPod(n1);
    await fresh.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
    await pods[1]!.host.exec('ping', ['-c', '1', '-W', '2', pods[0]!.ip!]);
    assert.ok(c.allocatedIps(n1).includes(pods[0]!.ip!));
    await c.deletePod(n1, pods[0]!);
    assert.ok(!c.allocatedIps(n1).includes(pods[0]!.ip!), 'the flannel-era pod\'s IP is free again');
    assert.deepEqual(await ipJson(pods[0]!.host.name, ['addr', 'show', 'dev', 'eth0']).catch(() => []), [], 'its eth0 is gone');
    pods[0] = fresh;
  });

  it('and back: flanneld takes n1 again from twill, and pods keep talking', async () => {
    const [dev] = await ipJson<{ address: string }[]>(n1.host.name, ['link', 'show', 'flannel.1']);
    await n1.agent!.stop();
    await startFlanneld(n1);
    const [dev2] = await ipJson<{ address: string }[]>(n1.host.name, ['link', 'show', 'flannel.1']);
    assert.equal(dev2!.address, dev!.address);
    await eventually(async () => {
      await pods[0]!.host.exec('ping', ['-c', '1', '-W', '1', pods[1]!.ip!]);
      await pods[1]!.host.exec('ping', ['-c', '1', '-W', '1', pods[0]!.ip!]);
    }, 10_000, 200);
    assert.equal((await client.get(`${PREFIX}/subnets/`)).kvs.length, 2);
  });
});
