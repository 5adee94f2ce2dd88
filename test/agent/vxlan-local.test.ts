import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, type ClusterNode, type Pod } from './cluster.js';
import { AgentProcess } from '../support/agent.js';
import { ipJson, run } from '../support/exec.js';
import { sourceSeenBy } from '../support/traffic.js';
import { LocalStore } from '../../src/subnet/local-store.js';

const NET = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } };

describe('agent: three nodes, vxlan, local store', () => {
  const c = new TestCluster({ nodes: 3 });
  let store: string[];
  let n1: ClusterNode, n2: ClusterNode, n3: ClusterNode;
  const pods: Pod[] = [];
  before(async () => {
    await c.build();
    [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    // --ip-masq as kube-flannel.yml runs flanneld (without it the bridge plugin masquerades pod-to-pod traffic too).
    store = ['--store', `local:${join(c.tmp.dir, 'leases.db')}`, '--net-conf', c.tmp.netConf(NET), '--ip-masq'];
    // Left by an earlier run on n1: a stale cni0 address (flannel#1850), a route of twill's for a
    // lease that no longer exists, and an administrator's static route twill must not touch.
    await n1.host.handle.addLink({ kind: 'bridge', name: 'cni0', up: true });
    await n1.host.handle.addAddr('cni0', '10.244.250.1/24');
    await n1.host.handle.addAddr('cni0', '192.0.2.1/24');
    await n1.host.handle.addLink({ kind: 'bridge', name: 'old0', up: true });
    await n1.host.handle.addRoute({ dst: '10.244.251.0/24', device: 'old0', protocol: 87 });
    await n1.host.handle.addRoute({ dst: '10.244.252.0/24', device: 'old0', protocol: 4 });
  });
  after(() => c.cleanup());

  it('three agents started at once: distinct leases, subnet.env as flannel writes it, ready', async () => {
    const agents = c.nodes.map((n) => c.start(n, store, ['--healthz-port', '9099']));
    await Promise.all(agents.map((a) => a.ready()));
    const subnets = c.nodes.map((n) => c.subnetEnv(n).FLANNEL_SUBNET);
    assert.equal(new Set(subnets).size, 3, `distinct subnets: ${subnets.join(' ')}`);
    for (const n of c.nodes) {
      const env = c.subnetEnv(n);
      assert.equal(env.FLANNEL_NETWORK, '10.244.0.0/16');
      assert.match(env.FLANNEL_SUBNET!, /^10\.244\.\d+\.1\/24$/);
      assert.equal(env.FLANNEL_MTU, '1450');
      assert.equal(env.FLANNEL_IPMASQ, 'true');
      assert.deepEqual(Object.keys(env), ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ']);
      assert.equal(await n.host.exec('curl', ['-s', 'http://127.0.0.1:9099/readyz']), 'ready\n');
    }
  });

  it('each node programs the other two: neighbour, FDB entry, onlink route, with the peers\' VtepMACs', async () => {
    for (const n of c.nodes) {
      const others = c.nodes.filter((o) => o !== n);
      const want = others.map((o) => c.subnetEnv(o).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24')).sort();
      await eventually(async () => assert.deepEqual(await c.routesVia(n, 'flannel.1'), want));
      const fdb = await c.fdb(n);
      for (const o of others) {
        const [dev] = await ipJson<{ address: string }[]>(o.host.name, ['link', 'show', 'flannel.1']);
        assert.ok(fdb.some((f) => f.mac === dev!.address && f.dst === o.ip), `${n.name} has an FDB entry for ${o.name}`);
        const kept = JSON.parse(readFileSync(join(o.dataDir, 'agent.json'), 'utf8')) as { vtepMac: { ipv4: string } };
        assert.equal(kept.vtepMac.ipv4, dev!.address, 'the VtepMAC is kept in the data dir');
      }
      assert.equal(fdb.length, 2);
    }
  });

  it('what an earlier run left: the stale cni0 address replaced, the stale route removed, foreign ones left alone', async () => {
    const own = c.subnetEnv(n1).FLANNEL_SUBNET!;
    const [cni0] = await ipJson<{ addr_info: { family: string; local: string; prefixlen: number }[] }[]>(n1.host.name, ['addr', 'show', 'dev', 'cni0']);
    assert.deepEqual(cni0!.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`).sort(), ['192.0.2.1/24', own].sort());
    assert.deepEqual(await ipJson(n1.host.name, ['route', 'show', '10.244.251.0/24']), []);
    assert.equal((await ipJson(n1.host.name, ['route', 'show', '10.244.252.0/24'])).length, 1, 'a static route is not twill\'s');
    await n1.agent!.waitFor((l) => l.msg.includes('outside the cluster network') && l.address === '192.0.2.1/24');
    // The bridge plugin refuses a foreign address as the reference does: the administrator removes it.
    await n1.host.handle.deleteAddr('cni0', '192.0.2.1/24');
  });

  it('pods on three nodes reach each other, with their own source IPs (no NAT)', async () => {
    for (const n of c.nodes) pods.push(await c.addPod(n));
    for (const [i, from] of pods.entries()) {
      for (const [j, to] of pods.entries()) if (i !== j) await from.host.exec('ping', ['-c', '1', '-W', '2', to.ip!]);
    }
    assert.equal(await sourceSeenBy(pods[2]!.host, pods[2]!.ip!, pods[0]!.host), pods[0]!.ip);
    // The largest packet the overlay carries passes with DF; one byte more does not.
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', '1422', pods[1]!.ip!]);
    await assert.rejects(pods[0]!.host.exec('ping', ['-c', '1', '-W', '1', '-M', 'do', '-s', '1423', pods[1]!.ip!]));
  });

  it('a deleted route, FDB entry, neighbour and the whole device come back within a second', async () => {
    const peer = c.subnetEnv(n2).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24');
    const gw = peer.replace(/\/24$/, '');
    const timed = async (what: string, damage: () => Promise<unknown>, check: () => Promise<void>) => {
      await damage();
      const t0 = Date.now();
      await eventually(check, 1000, 20).catch((e: Error) => assert.fail(`${what} not restored within 1 s: ${e.message}`));
      return Date.now() - t0;
    };
    const routeBack = async () => assert.ok((await c.routesVia(n1, 'flannel.1')).includes(peer));
    const fdbBack = async () => assert.equal((await c.fdb(n1)).filter((f) => f.dst === n2.ip).length, 1);
    const neighBack = async () => assert.ok((await ipJson<{ dst: string; state: string[] }[]>(n1.host.name, ['neigh', 'show', 'dev', 'flannel.1'])).some((x) => x.dst === gw && x.state.includes('PERMANENT')));
    await timed('route', () => run('ip', ['-n', n1.host.name, 'route', 'del', peer]), routeBack);
    const mac = (await c.fdb(n1)).find((f) => f.dst === n2.ip)!.mac;
    await timed('FDB entry', () => run('bridge', ['-n', n1.host.name, 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', n2.ip!]), fdbBack);
    await timed('neighbour', () => run('ip', ['-n', n1.host.name, 'neigh', 'del', gw, 'dev', 'flannel.1']), neighBack);
    await timed('device', () => run('ip', ['-n', n1.host.name, 'link', 'del', 'flannel.1']), async () => {
      await routeBack();
      await fdbBack();
      await neighBack();
    });
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
    const metrics = await n1.host.exec('curl', ['-s', 'http://127.0.0.1:9099/metrics']);
    assert.match(metrics, /twill_reconcile_corrections_total\{object="route",kind="missing"\} [2-9]/);
    assert.match(metrics, /twill_leases_known 2/);
    await n1.agent!.waitFor((l) => l.msg === 'repaired' && l.object === 'device');
  });

  it('rules: flushed FLANNEL-FWD and a FORWARD policy of DROP set by someone else; pod traffic still flows', async () => {
    await run('ip', ['netns', 'exec', n2.host.name, 'iptables', '-F', 'FLANNEL-FWD']);
    await eventually(async () => assert.match(await run('ip', ['netns', 'exec', n2.host.name, 'iptables', '-S', 'FLANNEL-FWD']), /-s 10\.244\.0\.0\/16 .*ACCEPT/), 3000);
    for (const n of c.nodes) await run('ip', ['netns', 'exec', n.host.name, 'iptables', '-P', 'FORWARD', 'DROP']);
    try {
      await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
      await pods[2]!.host.exec('ping', ['-c', '1', '-W', '2', pods[0]!.ip!]);
    } finally {
      for (const n of c.nodes) await run('ip', ['netns', 'exec', n.host.name, 'iptables', '-P', 'FORWARD', 'ACCEPT']);
    }
  });

  it('a second agent on the same data dir is refused, naming the running one', async () => {
    const second = new AgentProcess(n1.host, [...store, '--subnet-file', join(c.tmp.dir, 'x.env'), '--data-dir', n1.dataDir]);
    assert.equal(await second.exited, 1);
    assert.match(second.stderr, /another twill agent is running with data directory .* \(pid \d+\): one agent per node/);
  });

  it('restart: same subnet, same VtepMAC; the data plane stays up while the agent is down', async () => {
    const before = c.subnetEnv(n2).FLANNEL_SUBNET;
    const [dev] = await ipJson<{ address: string }[]>(n2.host.name, ['link', 'show', 'flannel.1']);
    assert.equal(await n2.agent!.stop(), 0);
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
    // Even with the device gone, the MAC comes back from the data dir.
    await run('ip', ['-n', n2.host.name, 'link', 'del', 'flannel.1']);
    const again = c.start(n2, store, ['--healthz-port', '9099']);
    const acquired = await again.waitFor('acquired lease');
    assert.equal(acquired.how, 'own-lease');
    await again.ready();
    assert.equal(c.subnetEnv(n2).FLANNEL_SUBNET, before);
    const [dev2] = await ipJson<{ address: string }[]>(n2.host.name, ['link', 'show', 'flannel.1']);
    assert.equal(dev2!.address, dev!.address);
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[1]!.ip!]);
  });

  it('a peer back with a new VtepMAC: the others replace neighbour and FDB entry, and drop the stale one', async () => {
    const [old] = await ipJson<{ address: string }[]>(n3.host.name, ['link', 'show', 'flannel.1']);
    await n3.agent!.stop();
    // A reboot as flanneld in etcd mode does it: the device and its MAC are gone.
    rmSync(join(n3.dataDir, 'agent.json'));
    await run('ip', ['-n', n3.host.name, 'link', 'del', 'flannel.1']);
    await c.start(n3, store).ready();
    const [fresh] = await ipJson<{ address: string }[]>(n3.host.name, ['link', 'show', 'flannel.1']);
    assert.notEqual(fresh!.address, old!.address);
    for (const n of [n1, n2]) {
      await eventually(async () => assert.deepEqual((await c.fdb(n)).filter((f) => f.dst === n3.ip).map((f) => f.mac), [fresh!.address]));
      await n.agent!.waitFor('peer changed');
    }
    await pods[0]!.host.exec('ping', ['-c', '1', '-W', '2', pods[2]!.ip!]);
  });

  it('a node leaves (its lease deleted): its routes go from the others; its agent stops with the reason', async () => {
    const key = c.subnetEnv(n3).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0-24');
    const s = new LocalStore(join(c.tmp.dir, 'leases.db'));
    try {
      assert.equal(await s.remove(key), true);
    } finally {
      await s.close();
    }
    const subnet = key.replace('-', '/');
    for (const n of [n1, n2]) await eventually(async () => assert.ok(!(await c.routesVia(n, 'flannel.1')).includes(subnet)), 3000);
    assert.equal(await n3.agent!.exited, 1);
    assert.match(n3.agent!.stderr, /this node's lease 10\.244\.\d+\.0\/24 .* was deleted from the store: stopping/);
  });
});
