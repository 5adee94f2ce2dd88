// `twill agent` as a person meets it: a flanneld command line and FLANNELD_*
// variables understood as flanneld understands them, clear refusals, a missing
// prerequisite named with its fix, and a malformed lease in the store skipped.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestCluster, eventually, type ClusterNode } from './cluster.js';
import Database from 'better-sqlite3';
import { LocalStore } from '../../src/subnet/local-store.js';

const BIN = fileURLToPath(new URL('../../../bin/twill', import.meta.url));

function agentCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'agent', ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('twill agent: the command line', () => {
  it('a flanneld command line (one dash, Go style) and FLANNELD_* variables mean what they mean to flanneld', async () => {
    const r = await agentCli(
      ['-etcd-endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379', '-etcd-prefix=/my/net', '-iface=eth1', '-iface=10.0.0.5', '-ip-masq', '--subnet-lease-renew-margin=30', '--print-options'],
      { FLANNELD_PUBLIC_IP: '203.0.113.9', FLANNELD_IPTABLES_RESYNC: '7', FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE: 'true' },
    );
    assert.equal(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout) as Record<string, unknown> & { store: Record<string, unknown> };
    assert.deepEqual(o.store, { kind: 'etcd', endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'], prefix: '/my/net', caFile: null, certFile: null, keyFile: null, username: null, password: null });
    assert.deepEqual(o.ifaces, ['eth1', '10.0.0.5']);
    assert.equal(o.publicIp, '203.0.113.9');
    assert.equal(o.ipMasq, true);
    assert.equal(o.ipMasqRandomFully, false);
    assert.equal(o.rulesResyncMs, 7000);
    assert.equal(o.renewMarginMs, 30 * 60_000);
    assert.equal(o.healthzIp, '127.0.0.1', 'health on loopback unless asked');
    assert.equal(o.forwardRules, true, 'forward accept rules unless asked');
  });

  it('-iptables-forward-rules=false (and FLANNELD_IPTABLES_FORWARD_RULES=false) turns the forward rules off', async () => {
    for (const [args, env] of [[['-iptables-forward-rules=false'], {}], [[], { FLANNELD_IPTABLES_FORWARD_RULES: 'false' }]] as const) {
      const r = await agentCli(['--store', 'local:/tmp/x.db', '--net-conf', '/tmp/n.json', ...args, '--print-options'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { forwardRules: boolean }).forwardRules, false, JSON.stringify(args));
    }
  });

  it('a flag given on the command line wins over its FLANNELD_* variable; --ip-masq=false works', async () => {
    const r = await agentCli(['--store', 'local:/tmp/x.db', '--net-conf', '/tmp/n.json', '--iface', 'eth2', '--ip-masq=false', '--print-options'], { FLANNELD_IFACE: 'eth1', FLANNELD_IP_MASQ: 'true' });
    assert.equal(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout) as { ifaces: string[]; ipMasq: boolean; store: unknown };
    assert.deepEqual(o.ifaces, ['eth2']);
    assert.equal(o.ipMasq, false);
    assert.deepEqual(o.store, { kind: 'local', path: '/tmp/x.db' });
  });

  it('no store: refused with the choices, never a silent default', async () => {
    const r = await agentCli([]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no store: choose where leases live: --store local:PATH .* --store etcd:URL\[,URL\] .* --store kube .*no default store/);
  });

  it('bad input is refused with the flag and the value', async () => {
    const cases: [string[], RegExp][] = [
      [['--store', 'local'], /--store local needs the path of its file/],
      [['--store', 'consul:x'], /--store "consul:x" is not a store/],
      [['--store', 'local:/tmp/x.db'], /the local store holds no network config: give --net-conf FILE/],
      [['--store', 'etcd:10.0.0.1'], /etcd endpoint "10.0.0.1" is not a URL/],
      [['--store', 'local:/x', '--etcd-endpoints', 'http://a:1'], /contradict each other/],
      [['--etcd-endpoints', 'http://a:1', '--healthz-port', '70000'], /--healthz-port must be a whole number from 0 to 65535, got "70000"/],
      [['--etcd-endpoints', 'http://a:1', '--ip-masq=maybe'], /--ip-masq takes true or false, got "maybe"/],
    ];
    for (const [args, re] of cases) {
      const r = await agentCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
    }
  });
});

describe('twill agent: prerequisites and a malformed lease', () => {
  const c = new TestCluster({ nodes: 2 });
  let a: ClusterNode, b: ClusterNode;
  let db: string;
  let net: string;
  before(async () => {
    await c.build();
    [a, b] = c.nodes as [ClusterNode, ClusterNode];
    db = join(c.tmp.dir, 'leases.db');
    net = c.tmp.netConf({ Network: '10.252.0.0/16' });
  });
  after(() => c.cleanup());

  it('ip_forward off: the agent refuses to start and says how to fix it', async () => {
    a.host.handle.writeSysctl('net.ipv4.ip_forward', '0');
    try {
      const agent = c.start(a, ['--store', `local:${db}`, '--net-conf', net]);
      assert.equal(await agent.exited, 1);
      assert.match(agent.stderr, /net\.ipv4\.ip_forward is 0: this node would not forward pod traffic .*Fix: sysctl -w net\.ipv4\.ip_forward=1/);
    } finally {
      a.host.handle.writeSysctl('net.ipv4.ip_forward', '1');
    }
  });

  it('a malformed lease in the store is logged and skipped; the good ones are programmed', async () => {
    const store = new LocalStore(db);
    try {
      // A lease another tool wrote without a VtepMAC: well-formed, but nothing to program.
      await store.create({ subnet: { ip: { family: 4, value: 0x0afc6300n }, prefix: 24 }, ipv6Subnet: null, expiresAt: null, attrs: { publicIp: '198.18.0.99', publicIpv6: null, backendType: 'vxlan', backendData: { VNI: 1 }, backendV6Data: null } }, null);
    } finally {
      await store.close();
    }
    // And a key that is no subnet with a value that is no JSON, as a broken writer leaves it.
    const raw = new Database(db);
    try {
      raw.prepare("INSERT INTO leases (key, value, expires_at, mod_revision) VALUES ('not-a-subnet', '{', NULL, 1)").run();
    } finally {
      raw.close();
    }
    const agents = [c.start(a, ['--store', `local:${db}`, '--net-conf', net]), c.start(b, ['--store', `local:${db}`, '--net-conf', net])];
    await Promise.all(agents.map((x) => x.ready()));
    const peer = c.subnetEnv(b).FLANNEL_SUBNET!.replace(/\.1\/24$/, '.0/24');
    await eventually(async () => assert.deepEqual(await c.routesVia(a, 'flannel.1'), [peer]), 5000);
    await agents[0]!.waitFor((l) => l.msg === 'skipping a malformed lease in the store' && l.key === 'not-a-subnet');
    await agents[0]!.waitFor((l) => l.msg === 'cannot program the path to this peer' && String(l.lease).startsWith('10.252.99.0/24') && /VtepMAC/.test(String(l.err)));
    assert.equal(agents[0]!.logs.some((l) => l.level >= 60), false, 'nothing fatal');
  });
});

