// macspoofchk: the reference's nftables layout (table bridge nat, a chain pair per
// attachment), real frames dropped when the pod forges its MAC, teardown by name on DEL
// (also when the pod's namespace is gone), and either implementation's DEL removing
// what the other's ADD made.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNetns } from '../../src/kernel/index.js';
import { NftablesSpoofCheck } from '../../src/firewall/spoofcheck_nftables.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { REFERENCE_V1_10, requireReference, runPlugin, twillPluginDir, type CniEnv } from '../support/cni.js';

interface AddResult { interfaces: { name: string; mac: string; sandbox?: string }[] }

/** The table as the reference leaves it after an ADD (nft 1.0.6 prints priority -300 as "dstnat"). */
const expectedTable = (rules: { id: string; veth: string; mac: string }[]) =>
  [
    'table bridge nat {',
    '\tchain PREROUTING {',
    '\t\ttype filter hook prerouting priority dstnat; policy accept;',
    ...rules.map((r) => `\t\tiifname "${r.veth}" jump cni-br-iface-${r.id} comment "macspoofchk-${r.id}"`),
    '\t}',
    ...rules.flatMap((r) => [
      '',
      `\tchain cni-br-iface-${r.id} {`,
      `\t\tjump cni-br-iface-${r.id}-mac comment "macspoofchk-${r.id}"`,
      '\t}',
      '',
      `\tchain cni-br-iface-${r.id}-mac {`,
      `\t\tether saddr ${r.mac} return comment "macspoofchk-${r.id}"`,
      `\t\tdrop comment "macspoofchk-${r.id}"`,
      '\t}',
    ]),
    '}',
  ].join('\n');

const EMPTY_TABLE = expectedTable([]);

describe('bridge macspoofchk', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let twill: ReturnType<typeof twillPluginDir>;
  let data: string;
  let reference: string;
  before(async () => {
    host = await hosts.host('spoofnode', { 'net.ipv4.ip_forward': '0', 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' });
    twill = twillPluginDir();
    reference = requireReference(REFERENCE_V1_10);
    data = mkdtempSync(join(tmpdir(), 'twill-spoof-'));
  });
  after(async () => {
    twill.remove();
    rmSync(data, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const conf = (extra: Record<string, unknown> = {}) => ({
    cniVersion: '1.0.0',
    name: 'spoofnet',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    macspoofchk: true,
    ...extra,
    ipam: { type: 'host-local', dataDir: data, subnet: '10.248.0.0/24' },
  });
  const env = (command: string, pod: TestHost | string, containerId: string, dir: string): CniEnv => ({
    command, containerId, netns: typeof pod === 'string' ? pod : `/run/netns/${pod.name}`, ifname: 'eth0', path: dir,
  });
  const plugin = (dir: string) => join(dir, 'bridge');
  const table = async () => (await host.exec('nft', ['list', 'table', 'bridge', 'nat'])).trimEnd();
  const ruleset = async () => (await host.exec('nft', ['list', 'ruleset'])).trimEnd();
  const add = async (pod: TestHost, id: string, dir: string, c = conf()) => {
    const r = await runPlugin(host.name, plugin(dir), env('ADD', pod, id, dir), c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = r.json as unknown as AddResult;
    return { veth: res.interfaces[1]!.name, mac: res.interfaces[2]!.mac, result: r.json! };
  };
  const del = async (pod: TestHost | string, id: string, dir: string, c = conf()) => {
    const r = await runPlugin(host.name, plugin(dir), env('DEL', pod, id, dir), c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  };
  const ping = (pod: TestHost, ip: string) => pod.exec('ping', ['-c', '1', '-W', '1', ip]).then(() => true, () => false);

  it('ADD lays the rules out as the reference: table bridge nat, PREROUTING, a chain pair named after the attachment', async () => {
    const pod = await hosts.host('s1');
    const a = await add(pod, 'spoof-1', twill.dir);
    assert.equal(await table(), expectedTable([{ id: 'spoof-1-eth0', veth: a.veth, mac: a.mac }]));
    const check = await runPlugin(host.name, plugin(twill.dir), env('CHECK', pod, 'spoof-1', twill.dir), { ...conf(), prevResult: a.result });
    assert.equal(check.code, 0, check.stdout);
    await del(pod, 'spoof-1', twill.dir);
    assert.equal(await table(), EMPTY_TABLE, 'DEL removes the rule and both chains; the shared table and PREROUTING stay, as in the reference');
    await del(pod, 'spoof-1', twill.dir);
  });

  it('drops the frames of a pod that forges its MAC, and lets them through again when it stops', async () => {
    const pod = await hosts.host('s2');
    const a = await add(pod, 'spoof-2', twill.dir);
    assert.ok(await ping(pod, '10.248.0.1'), 'the gateway answers the real MAC');
    const forge = async (mac: string) => {
      await pod.handle.setLink('eth0', { mac });
      await pod.exec('ip', ['neigh', 'flush', 'dev', 'eth0']);
      await host.exec('ip', ['neigh', 'flush', 'dev', 'cni0']);
    };
    await forge('02:00:5e:00:53:01');
    assert.equal(await ping(pod, '10.248.0.1'), false, 'a forged source MAC is dropped on the bridge');
    const counters = await host.exec('nft', ['list', 'chain', 'bridge', 'nat', 'cni-br-iface-spoof-2-eth0-mac']);
    assert.match(counters, /drop comment "macspoofchk-spoof-2-eth0"/);
    await forge(a.mac);
    assert.ok(await ping(pod, '10.248.0.1'), 'the real MAC passes again');
    await del(pod, 'spoof-2', twill.dir);
    // The control: without macspoofchk the same forgery goes through.
    const open = await hosts.host('s2c');
    await add(open, 'spoof-2c', twill.dir, conf({ macspoofchk: false }));
    await open.handle.setLink('eth0', { mac: '02:00:5e:00:53:02' });
    assert.ok(await ping(open, '10.248.0.1'), 'a forged MAC passes without the check');
    await del(open, 'spoof-2c', twill.dir, conf({ macspoofchk: false }));
  });

  it('CHECK names a missing piece; DEL of one pod leaves the other pod\'s rules alone', async () => {
    const p3 = await hosts.host('s3');
    const p4 = await hosts.host('s4');
    const a3 = await add(p3, 'spoof-3', twill.dir);
    const a4 = await add(p4, 'spoof-4', twill.dir);
    assert.equal(await table(), expectedTable([{ id: 'spoof-3-eth0', veth: a3.veth, mac: a3.mac }, { id: 'spoof-4-eth0', veth: a4.veth, mac: a4.mac }]));
    await host.exec('nft', ['flush', 'chain', 'bridge', 'nat', 'cni-br-iface-spoof-3-eth0-mac']);
    const broken = await runPlugin(host.name, plugin(twill.dir), env('CHECK', p3, 'spoof-3', twill.dir), { ...conf(), prevResult: a3.result });
    assert.equal(broken.code, 1);
    assert.match(String(broken.json?.msg), /chain cni-br-iface-spoof-3-eth0-mac does not hold exactly: ether saddr .* return, then drop/);
    await del(p3, 'spoof-3', twill.dir);
    assert.equal(await table(), expectedTable([{ id: 'spoof-4-eth0', veth: a4.veth, mac: a4.mac }]));
    const ok = await runPlugin(host.name, plugin(twill.dir), env('CHECK', p4, 'spoof-4', twill.dir), { ...conf(), prevResult: a4.result });
    assert.equal(ok.code, 0, ok.stdout);
    await del(p4, 'spoof-4', twill.dir);
    assert.equal(await table(), EMPTY_TABLE);
  });

  it('DEL removes the chains when the pod\'s namespace is already gone (the reference leaves them)', async () => {
    for (const [dir, leaves] of [[reference, true], [twill.dir, false]] as const) {
      const pod = await hosts.host(`s5${leaves ? 'r' : 't'}`);
      const path = `/run/netns/${pod.name}`;
      await add(pod, 'spoof-5', dir);
      pod.handle.close();
      pod.netns.close();
      deleteNetns(pod.name);
      await del(path, 'spoof-5', dir);
      if (leaves) {
        assert.match(await table(), /chain cni-br-iface-spoof-5-eth0 /, 'the reference leaks the chains: pinned, so a fixed reference shows up');
        // Its veth went with the namespace; twill's DEL cleans up what the reference left.
        await del(path, 'spoof-5', twill.dir);
      }
      assert.equal(await table(), EMPTY_TABLE, dir);
    }
  });

  it('either side\'s DEL removes what the other\'s ADD made', async () => {
    const pod = await hosts.host('s6');
    const before = await ruleset();
    const fromRef = await add(pod, 'spoof-6', reference);
    const refTable = await table();
    await del(pod, 'spoof-6', twill.dir);
    assert.equal(await table(), EMPTY_TABLE, 'twill\'s DEL after the reference\'s ADD');
    const fromTwill = await add(pod, 'spoof-6', twill.dir);
    const unrandom = (t: string, a: { veth: string; mac: string }) => t.replaceAll(a.veth, 'VETH').replaceAll(a.mac, 'MAC');
    assert.equal(unrandom(await table(), fromTwill), unrandom(refTable, fromRef), 'the same table after either ADD');
    await del(pod, 'spoof-6', reference);
    assert.equal(await table(), EMPTY_TABLE, 'the reference\'s DEL after twill\'s ADD');
    assert.equal(await ruleset(), before);
  });

  it('a failed ADD takes its spoof check back', async () => {
    const pod = await hosts.host('s7');
    await host.handle.replaceAddr('cni0', '10.248.9.1/24'); // the famous conflict: fails after the spoof check is set up
    await host.handle.deleteAddr('cni0', '10.248.0.1/24').catch(() => undefined);
    const before = await table();
    const r = await runPlugin(host.name, plugin(twill.dir), env('ADD', pod, 'spoof-7', twill.dir), conf());
    assert.equal(r.code, 1);
    assert.match(String(r.json?.msg), /already has an IP address different from 10\.248\.0\.1\/24/);
    assert.equal(await table(), before);
    await host.handle.deleteAddr('cni0', '10.248.9.1/24');
  });

  it('setting up twice leaves one copy (the reference would add a second jump)', async () => {
    const sc = new NftablesSpoofCheck(host.netns);
    const s = { containerId: 'twice', ifname: 'eth0', hostIface: 'vethdeadbeef', mac: '02:00:5e:00:53:aa' };
    await sc.setup(s);
    await sc.setup({ ...s, mac: '02:00:5e:00:53:bb' });
    assert.equal(await table(), expectedTable([{ id: 'twice-eth0', veth: 'vethdeadbeef', mac: '02:00:5e:00:53:bb' }]));
    await sc.check({ ...s, mac: '02:00:5e:00:53:bb' });
    await assert.rejects(sc.check(s), /ether saddr 02:00:5e:00:53:aa return, then drop/);
    await sc.teardown(s);
    await sc.teardown(s);
    assert.equal(await table(), EMPTY_TABLE);
  });
});
