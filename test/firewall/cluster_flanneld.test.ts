// The cluster rules against the real flanneld v0.28.9 (built by `npm run peers -- flanneld`),
// run inside a test host with its own etcd: twill takes over the rules flanneld left
// (iptables: as they are, nothing to correct; nftables: the two postrtg rules twill writes
// with the iptables mode's meaning), writes the same rules on a fresh node, and removes them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClusterRules, type ClusterRulesSpec } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { allIptables, flannelFwd, flannelNat, nftTableLines, tableLines } from './cluster_oracle.js';

const PEERS = process.env.TWILL_PEERS_DIR ?? '/var/cache/twill-peers';
const FLANNELD = join(PEERS, 'bin', 'flanneld');
const ETCD_URL = 'http://127.0.0.1:2379';
const NETWORK = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd10::/56', Backend: { Type: 'vxlan' } };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

function start(h: TestHost, cmd: string, args: string[]): { child: ChildProcess; output: () => string } {
  let out = '';
  const child = spawn('ip', ['netns', 'exec', h.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  child.kill(signal);
  await closed;
}

/** One `nft list table` as chain name → its lines. */
function chainsOf(lines: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur: string[] | null = null;
  for (const l of lines) {
    const m = /^chain (\S+) \{$/.exec(l);
    if (m) out.set(m[1], (cur = []));
    else if (l === '}') cur = null;
    else cur?.push(l);
  }
  return out;
}

describe('cluster rules against flanneld v0.28.9', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let dir: string;
  let etcd: ChildProcess | undefined;
  let flanneld: ChildProcess | undefined;

  /** Runs flanneld until `ready`, then kills it (its rules stay: it removes nothing on exit) and returns its subnet.env as a spec. */
  async function runFlanneld(config: object, ready: () => Promise<boolean>): Promise<ClusterRulesSpec> {
    const key = Buffer.from('/coreos.com/network/config').toString('base64');
    const value = Buffer.from(JSON.stringify(config)).toString('base64');
    await h.exec('curl', ['-sf', '-X', 'POST', `${ETCD_URL}/v3/kv/put`, '-d', JSON.stringify({ key, value })]);
    const subnetFile = join(dir, 'subnet.env');
    await rm(subnetFile, { force: true });
    const f = start(h, FLANNELD, ['--etcd-endpoints', ETCD_URL, '--ip-masq', '--iface', 'eth0', '--subnet-file', subnetFile]);
    flanneld = f.child;
    try {
      await until('flanneld to write its rules', async () => existsSync(subnetFile) && (await ready()));
    } catch (e) {
      throw new Error(`${(e as Error).message}; flanneld said:\n${f.output()}`);
    } finally {
      await stop(flanneld);
    }
    const env = Object.fromEntries((await readFile(subnetFile, 'utf8')).split('\n').filter(Boolean).map((l) => l.split('=', 2) as [string, string]));
    const net = (cidr: string) => cidr.replace(/\.\d+\/24$/, '.0/24').replace(/::1\/64$/, '::/64');
    return { clusterCidrs: { ipv4: env.FLANNEL_NETWORK, ipv6: env.FLANNEL_IPV6_NETWORK }, podSubnets: { ipv4: net(env.FLANNEL_SUBNET!), ipv6: net(env.FLANNEL_IPV6_SUBNET!) }, ipMasq: true };
  }

  before(async () => {
    if (!existsSync(FLANNELD)) throw new Error(`${FLANNELD} is missing: run "npm run peers -- flanneld" (.ci/run does)`);
    const { hosts: n } = await hosts.underlay({ fl: '198.18.0.1/24' });
    h = n.fl!;
    await h.handle.addAddr('eth0', 'fd18::1/64');
    dir = await mkdtemp(join(tmpdir(), 'twill-flanneld-'));
    const e = start(h, 'etcd', ['--name', 'twill-test', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', ETCD_URL, '--advertise-client-urls', ETCD_URL, '--listen-peer-urls', 'http://127.0.0.1:2380']);
    etcd = e.child;
    try {
      await until('etcd', async () => (await h.exec('curl', ['-s', `${ETCD_URL}/health`]).catch(() => '')).includes('"health":"true"'));
    } catch (err) {
      throw new Error(`${(err as Error).message}; etcd said:\n${e.output()}`);
    }
  });
  after(async () => {
    await stop(flanneld);
    await stop(etcd, 'SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
    await hosts.cleanup();
  });

  it("iptables mode: twill finds flanneld's rules exactly as it writes them, corrects nothing, and writes the same on a fresh node", async () => {
    const spec = await runFlanneld(NETWORK, async () => (await tableLines(h, 6, 'nft', 'filter')).filter((l) => l.startsWith('-A FLANNEL-FWD')).length === 2);
    const flannel = await allIptables(h);
    // The oracle's literal rules are flanneld's.
    assert.deepEqual(flannel['nft4 nat'].filter((l) => l.startsWith('-A')), flannelNat(spec.clusterCidrs.ipv4!, spec.podSubnets.ipv4!, 4));
    assert.deepEqual(flannel['nft6 nat'].filter((l) => l.startsWith('-A')), flannelNat(spec.clusterCidrs.ipv6!, spec.podSubnets.ipv6!, 6));
    assert.deepEqual(flannel['nft4 filter'].filter((l) => l.startsWith('-A')), flannelFwd(spec.clusterCidrs.ipv4!));

    const rules = openClusterRules('iptables', h.netns);
    assert.deepEqual(await rules.check(spec), []);
    assert.deepEqual(await rules.ensure(spec), [], 'nothing to correct: the same rules');
    assert.deepEqual(await allIptables(h), flannel);

    const fresh = await hosts.host('flfresh');
    await openClusterRules('iptables', fresh.netns).ensure(spec);
    assert.deepEqual(await allIptables(fresh), flannel, 'twill on a fresh node: byte for byte what flanneld writes');

    await rules.remove();
    const left = Object.values(await allIptables(h)).flat().filter((l) => l.includes('FLANNEL') || l.includes('flanneld'));
    assert.deepEqual(left, [], "remove takes flanneld's chains and jumps away");
  });

  it('nftables mode (EnableNFTables): same tables, chains, hooks and comments; the two postrtg rules that differ are replaced', async () => {
    const spec = await runFlanneld({ ...NETWORK, EnableNFTables: true }, async () => chainsOf(await nftTableLines(h, 'ip6', 'flannel-ipv6')).get('forward')?.length === 4);
    const flannel4 = await nftTableLines(h, 'ip', 'flannel-ipv4');
    const flannel6 = await nftTableLines(h, 'ip6', 'flannel-ipv6');
    const rules = openClusterRules('nftables', h.netns);
    const corrections = await rules.ensure(spec);
    assert.deepEqual(corrections.map((c) => `${c.kind} ${c.object}`), ['changed chain ip flannel-ipv4 postrtg', 'changed chain ip6 flannel-ipv6 postrtg']);
    assert.deepEqual(await rules.ensure(spec), []);

    for (const [p, flannel, cl, pod] of [
      ['ip', flannel4, spec.clusterCidrs.ipv4!, spec.podSubnets.ipv4!],
      ['ip6', flannel6, spec.clusterCidrs.ipv6!, spec.podSubnets.ipv6!],
    ] as const) {
      const twill = await nftTableLines(h, p, `flannel-ipv${p === 'ip' ? 4 : 6}`);
      assert.deepEqual(twill.slice(0, 2), flannel.slice(0, 2), 'table line and comment');
      const [a, b] = [chainsOf(flannel), chainsOf(twill)];
      assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      assert.deepEqual(b.get('forward'), a.get('forward'), 'forward: comment, hook, priority, rules');
      const fl = a.get('postrtg')!;
      const tw = b.get('postrtg')!;
      assert.deepEqual(tw.slice(0, 2), fl.slice(0, 2), 'postrtg: comment, hook, priority');
      const differ = fl.map((l, i) => [l, tw[i]]).filter(([x, y]) => x !== y);
      assert.deepEqual(differ, [
        ['meta mark 0x00004000 return', 'meta mark & 0x00004000 == 0x00004000 return'],
        [`${p} saddr != ${pod} ${p} daddr ${cl} return`, `${p} saddr != ${cl} ${p} daddr ${pod} return`],
      ]);
    }

    await rules.remove();
    assert.equal((await h.exec('nft', ['list', 'tables'])).includes('flannel'), false);
  });
});
