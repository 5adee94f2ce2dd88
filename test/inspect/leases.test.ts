// `twill explain --store`: the leases in the agents' store are the truth for the
// overlay. A cluster of three namespaces running real `twill agent` processes
// on one local store; faults are made on a node while its agent is stopped (a
// running agent puts every piece back within a second), each must give exactly
// its finding, and the repair must make it go.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { TestCluster, eventually, type ClusterNode } from '../agent/cluster.js';
import { ipJson } from '../support/exec.js';
import { explain } from '../../src/inspect/explain.js';
import type { Explanation, FindingId } from '../../src/inspect/model.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseCidr } from '../../src/ipam/addr.js';

const NET = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } };
const bin = new URL('../../../bin/twill', import.meta.url).pathname;

/** The ids of what is not merely informational. */
const problems = (e: Explanation): FindingId[] => e.findings.filter((f) => f.severity !== 'info').map((f) => f.id);
const show = (e: Explanation): string => JSON.stringify(e.findings, null, 2);

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('twill explain --store: three agents on a local store, their leases as the truth', () => {
  const c = new TestCluster({ nodes: 3 });
  let db: string;
  let store: LocalStore;
  let storeArgs: string[];
  let n1: ClusterNode, n2: ClusterNode;
  /** n2 as n1 must know it: its subnet, the subnet's .0 (its VTEP address), its VtepMAC. */
  let peer: { subnet: string; gw: string; mac: string; ip: string };

  const read = (n: ClusterNode) => explain({ netns: n.host.name, subnetFile: n.subnetFile, cniDataDir: join(c.tmp.dir, 'no-cni'), store });
  const ownSubnet = (n: ClusterNode) => c.subnetEnv(n).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24');

  before(async () => {
    await c.build();
    [n1, n2] = c.nodes as [ClusterNode, ClusterNode];
    db = join(c.tmp.dir, 'leases.db');
    storeArgs = ['--store', `local:${db}`, '--net-conf', c.tmp.netConf(NET), '--ip-masq'];
    // br_netfilter's switch, per namespace, as a node has it set (else br-netfilter-missing on every node).
    for (const n of c.nodes) n.host.handle.writeSysctl('net.bridge.bridge-nf-call-iptables', '1');
    await Promise.all(c.nodes.map((n) => c.start(n, storeArgs).ready()));
    for (const n of c.nodes) await eventually(async () => assert.equal((await c.routesVia(n, 'flannel.1')).length, 2));
    store = new LocalStore(db);
    const subnet = ownSubnet(n2);
    const [dev] = await ipJson<{ address: string }[]>(n2.host.name, ['link', 'show', 'flannel.1']);
    peer = { subnet, gw: subnet.replace(/\/24$/, ''), mac: dev!.address, ip: n2.ip! };
  });
  after(async () => {
    await store?.close();
    await c.cleanup();
  });

  it('healthy: every node holds what the others\' leases need; no warnings or errors; its own lease is recognised', async () => {
    for (const n of c.nodes) {
      const e = await read(n);
      assert.deepEqual(problems(e), [], `${n.name}: ${show(e)}`);
      assert.equal(e.store?.error, null);
      assert.equal(e.store?.leases.length, 3);
      assert.deepEqual(e.store!.leases.filter((l) => l.own).map((l) => l.subnet), [ownSubnet(n)]);
      const other = e.store!.leases.find((l) => l.subnet === ownSubnet(n2))!;
      assert.equal(other.backendType, 'vxlan');
      assert.equal(other.vtepMac, peer.mac);
      assert.equal(other.publicIp, n2.ip);
    }
  });

  /** On n1 (agent stopped): the fault gives exactly `id` (among warnings and errors), the repair none. */
  async function fault(id: FindingId, inject: () => Promise<unknown>, repair: () => Promise<unknown>, subject: RegExp): Promise<void> {
    await inject();
    try {
      const e = await read(n1);
      assert.deepEqual(problems(e), [id], show(e));
      assert.match(e.findings.find((f) => f.id === id)!.subject, subject);
    } finally {
      await repair();
    }
    const e = await read(n1);
    assert.deepEqual(problems(e), [], `after the repair of ${id}: ${show(e)}`);
  }

  it('faults on a node whose agent is stopped: each gives exactly its finding, the repair none', async () => {
    assert.equal(await n1.agent!.stop(), 0);
    const h = n1.host.handle;
    const route = { dst: peer.subnet, gateway: peer.gw, device: 'flannel.1', onlink: true, protocol: 87 };
    const esc = (s: string) => s.replace(/\./g, '\\.');
    await fault('missing-route', () => h.deleteRoute(route), () => h.addRoute(route), new RegExp(`^route ${esc(peer.subnet)}$`));
    await fault('missing-fdb', () => h.deleteFdb('flannel.1', peer.mac, peer.ip), () => h.appendFdb('flannel.1', peer.mac, peer.ip), new RegExp(`^fdb ${peer.mac} dev flannel\\.1$`));
    await fault('missing-neighbour', () => h.deleteNeigh('flannel.1', peer.gw), () => h.addNeigh('flannel.1', peer.gw, peer.mac), new RegExp(`^neighbour ${esc(peer.gw)} dev flannel\\.1$`));
    // The FDB entry of a peer that came back with a new VtepMAC: the old MAC is in no lease.
    await fault('stale-fdb', () => h.appendFdb('flannel.1', '0a:58:0a:f4:c9:00', peer.ip), () => h.deleteFdb('flannel.1', '0a:58:0a:f4:c9:00', peer.ip), /^fdb 0a:58:0a:f4:c9:00 dst /);
    // A route of twill's for a subnet no lease owns (a node that left while this agent was down).
    const gone = { dst: '10.244.201.0/24', gateway: '10.244.201.0', device: 'flannel.1', onlink: true, protocol: 87 };
    await fault('stale-route', () => h.addRoute(gone), () => h.deleteRoute(gone), /^route 10\.244\.201\.0\/24 via 10\.244\.201\.0 dev flannel\.1 onlink \(protocol 87\)$/);
    const goneNeigh = () => h.addNeigh('flannel.1', '10.244.201.0', '0a:58:0a:f4:c9:00');
    await fault('stale-neighbour', goneNeigh, () => h.deleteNeigh('flannel.1', '10.244.201.0'), /^neighbour 10\.244\.201\.0 /);
  });

  it('a lease for a node that does not exist: the stopped node lacks its neighbour, FDB entry and route; running nodes program it; deleting it repairs', async () => {
    const taken = (await store.list()).leases.map((l) => l.key);
    const third = Array.from({ length: 50 }, (_, i) => 200 + i).find((x) => !taken.includes(`10.244.${x}.0-24`))!;
    const ghost = { subnet: `10.244.${third}.0/24`, gw: `10.244.${third}.0`, mac: '0a:58:0a:f4:c8:99', ip: '198.18.0.99' };
    const created = await store.create(
      { subnet: parseCidr(ghost.subnet), ipv6Subnet: null, attrs: { publicIp: ghost.ip, publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: ghost.mac }, backendV6Data: null }, expiresAt: null },
      600_000,
    );
    assert.ok(created, `lease ${ghost.subnet} created`);
    try {
      const e = await read(n1);
      assert.deepEqual([...problems(e)].sort(), ['missing-fdb', 'missing-neighbour', 'missing-route'], show(e));
      const subjects = e.findings.filter((f) => f.severity !== 'info').map((f) => f.subject).sort();
      assert.deepEqual(subjects, [`fdb ${ghost.mac} dev flannel.1`, `neighbour ${ghost.gw} dev flannel.1`, `route ${ghost.subnet}`].sort());
      for (const f of e.findings.filter((x) => x.severity !== 'info')) assert.match(f.message, new RegExp(ghost.ip.replace(/\./g, '\\.')));
      // n2's agent runs: it programs the new lease at once, and explain agrees.
      await eventually(async () => assert.deepEqual(problems(await read(n2)), []), 3000, 100);
    } finally {
      await store.remove(created!.key);
    }
    assert.deepEqual(problems(await read(n1)), []);
    await eventually(async () => assert.deepEqual(problems(await read(n2)), []), 3000, 100);
  });

  it('the CLI: --store local:PATH; exit 1 on an error finding, 0 with --exit-zero or when healthy, 2 for a store file that does not exist', async () => {
    const args = ['explain', '--netns', n1.host.name, '--subnet-file', n1.subnetFile, '--cni-data-dir', join(c.tmp.dir, 'no-cni'), '--store', `local:${db}`, '--format', 'json'];
    const healthy = await cli(args);
    assert.equal(healthy.code, 0, healthy.stderr);
    assert.equal((JSON.parse(healthy.stdout) as Explanation).store?.leases.length, 3);
    const text = await cli(args.slice(0, -2));
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`store local:${db.replace(/[.]/g, '\\.')}: 3 leases at revision \\d+, this node's ${ownSubnet(n1).replace(/\./g, '\\.')}`));
    assert.match(text.stdout, new RegExp(`lease ${peer.subnet.replace('/', '-').replace(/\./g, '\\.')}: node ${n2.ip!.replace(/\./g, '\\.')} vxlan VtepMAC ${peer.mac}`));
    const route = { dst: peer.subnet, gateway: peer.gw, device: 'flannel.1', onlink: true, protocol: 87 };
    await n1.host.handle.deleteRoute(route);
    try {
      const broken = await cli(args);
      assert.equal(broken.code, 1, broken.stderr);
      assert.deepEqual(problems(JSON.parse(broken.stdout) as Explanation), ['missing-route']);
      const zero = await cli([...args, '--exit-zero']);
      assert.equal(zero.code, 0, zero.stderr);
    } finally {
      await n1.host.handle.addRoute(route);
    }
    const missing = await cli([...args.slice(0, -4), '--store', `local:${join(c.tmp.dir, 'nope.db')}`]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /twill explain: --store local:.*nope\.db: no such file/);
    const bad = await cli([...args.slice(0, -4), '--store', 'zookeeper:x']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /is not a store/);
  });

  it('the agent restarted: nothing missing, nothing stale', async () => {
    await c.start(n1, storeArgs).ready();
    for (const n of c.nodes) assert.deepEqual(problems(await read(n)), [], n.name);
  });
});
