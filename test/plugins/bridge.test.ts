import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNetns } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { ipJson } from '../support/exec.js';
import { runPlugin, twillPluginDir, type CniEnv } from '../support/cni.js';

interface IpLink { ifname: string; mtu: number; master?: string; flags: string[]; address?: string; linkinfo?: { info_kind?: string; info_slave_data?: { hairpin?: boolean } }; addr_info?: { family: string; local: string; prefixlen: number; scope: string }[] }
interface IpRoute { dst: string; gateway?: string; dev?: string }

describe('bridge', () => {
  const hosts = new TestHosts();
  let host: TestHost;
  let plugins: ReturnType<typeof twillPluginDir>;
  let data: string;
  let bridge: string;
  before(async () => {
    host = await hosts.host('node', { 'net.ipv4.ip_forward': '0', 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' });
    plugins = twillPluginDir();
    bridge = join(plugins.dir, 'bridge');
    data = mkdtempSync(join(tmpdir(), 'twill-br-'));
  });
  after(async () => {
    plugins.remove();
    rmSync(data, { recursive: true, force: true });
    await hosts.cleanup();
  });

  const conf = (extra: Record<string, unknown> = {}, ipam: Record<string, unknown> | null = { subnet: '10.244.1.0/24' }, version = '1.0.0') => ({
    cniVersion: version,
    name: 'podnet',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ...extra,
    ...(ipam ? { ipam: { type: 'host-local', dataDir: data, ...ipam } } : {}),
  });
  const env = (command: string, pod: TestHost | string, containerId: string, extra: Partial<CniEnv> = {}): CniEnv => ({
    command, containerId, netns: typeof pod === 'string' ? pod : `/run/netns/${pod.name}`, ifname: 'eth0', path: plugins.dir, ...extra,
  });
  const links = (h: TestHost) => ipJson<IpLink[]>(h.name, ['-d', 'addr', 'show']);
  const allocations = (net = 'podnet') => { try { return readdirSync(join(data, net)).filter((f) => /^\d|:/.test(f)); } catch { return []; } };

  it('ADD builds the reference\'s node picture: cni0 with the gateway, a veth port, eth0 with address and routes', async () => {
    const pod = await hosts.host('p1');
    const c = conf({ isDefaultGateway: true, hairpinMode: true, mtu: 1450 }, { subnet: '10.244.1.0/24', routes: [{ dst: '10.244.0.0/16' }] });
    const r = await runPlugin(host.name, bridge, env('ADD', pod, 'c1'), c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = r.json as { interfaces: { name: string; mac: string; sandbox?: string }[]; ips: unknown[]; routes: unknown[] };
    assert.equal(res.interfaces.length, 3);
    assert.equal(res.interfaces[0]!.name, 'cni0');
    assert.match(res.interfaces[1]!.name, /^veth[0-9a-f]{8}$/);
    assert.deepEqual(res.interfaces[2], { name: 'eth0', mac: res.interfaces[2]!.mac, sandbox: `/run/netns/${pod.name}` });
    assert.deepEqual(res.ips, [{ interface: 2, address: '10.244.1.2/24', gateway: '10.244.1.1' }]);
    assert.deepEqual(res.routes, [{ dst: '10.244.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.244.1.1' }]);

    const hostLinks = await links(host);
    const cni0 = hostLinks.find((l) => l.ifname === 'cni0')!;
    assert.equal(cni0.linkinfo?.info_kind, 'bridge');
    assert.ok(cni0.flags.includes('UP'));
    assert.deepEqual(cni0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.1/24']);
    const veth = hostLinks.find((l) => l.ifname === res.interfaces[1]!.name)!;
    assert.equal(veth.master, 'cni0');
    assert.equal(veth.mtu, 1450);
    assert.equal(veth.linkinfo?.info_slave_data?.hairpin, true);
    assert.ok(veth.flags.includes('UP'));
    const eth0 = (await links(pod)).find((l) => l.ifname === 'eth0')!;
    assert.equal(eth0.mtu, 1450);
    assert.equal(eth0.address, res.interfaces[2]!.mac);
    assert.deepEqual(eth0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.2/24']);
    const routes = await ipJson<IpRoute[]>(pod.name, ['route', 'show']);
    assert.ok(routes.some((x) => x.dst === 'default' && x.gateway === '10.244.1.1'));
    assert.ok(routes.some((x) => x.dst === '10.244.0.0/16' && x.gateway === '10.244.1.1'), 'a route without gw goes via the gateway');
    assert.equal(host.handle.readSysctl('net.ipv4.ip_forward'), '1', 'isGateway turns forwarding on');
    await host.exec('ping', ['-c', '1', '-W', '2', '10.244.1.2']);

    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c1'), c)).code, 0);
    assert.equal((await links(host)).some((l) => l.ifname === res.interfaces[1]!.name), false, 'DEL removes the veth');
    assert.deepEqual(allocations(), [], 'and releases the IP');
    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c1'), c)).code, 0, 'DEL twice succeeds');
  });

  it('CHECK passes on a healthy attachment and names what is missing on a broken one', async () => {
    const pod = await hosts.host('p2');
    const c = conf({ isDefaultGateway: true });
    const add = await runPlugin(host.name, bridge, env('ADD', pod, 'c2'), c);
    assert.equal(add.code, 0, add.stdout);
    const withPrev = { ...c, prevResult: add.json };
    const ok = await runPlugin(host.name, bridge, env('CHECK', pod, 'c2'), withPrev);
    assert.equal(ok.code, 0, ok.stdout);
    await pod.handle.deleteRoute({ dst: 'default' });
    const broken = await runPlugin(host.name, bridge, env('CHECK', pod, 'c2'), withPrev);
    assert.equal(broken.code, 1);
    assert.match(String(broken.json?.msg), /route 0\.0\.0\.0\/0 via 10\.244\.1\.1 is missing/);
    const noPrev = await runPlugin(host.name, bridge, env('CHECK', pod, 'c2'), c);
    assert.equal(noPrev.json?.code, 7);
    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c2'), c)).code, 0);
  });

  it('refuses a bridge holding another address (the famous error), and replaces it with forceAddress', async () => {
    const pod = await hosts.host('p3');
    await host.handle.replaceAddr('cni0', '10.244.7.1/24'); // an old subnet's gateway, as after a node got a new lease
    await host.handle.deleteAddr('cni0', '10.244.1.1/24').catch(() => undefined);
    const before = allocations();
    const refused = await runPlugin(host.name, bridge, env('ADD', pod, 'c3'), conf());
    assert.equal(refused.code, 1);
    assert.equal(refused.json?.msg, 'failed to set bridge addr: "cni0" already has an IP address different from 10.244.1.1/24');
    assert.deepEqual(allocations(), before, 'the refused ADD released its IP');
    assert.equal((await links(pod)).some((l) => l.ifname === 'eth0'), false, 'and removed its veth (the reference leaves it)');
    assert.equal((await links(host)).filter((l) => l.master === 'cni0').length, 0);
    const forced = await runPlugin(host.name, bridge, env('ADD', pod, 'c3'), conf({ forceAddress: true }));
    assert.equal(forced.code, 0, forced.stdout);
    const cni0 = (await links(host)).find((l) => l.ifname === 'cni0')!;
    assert.deepEqual(cni0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.1/24']);
    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c3'), conf())).code, 0);
  });

  it('a failed ADD leaves nothing: exhausted range, interface already there, unknown IPAM plugin', async () => {
    const pod = await hosts.host('p4');
    const snapshot = async () => JSON.stringify([(await links(host)).map((l) => [l.ifname, l.master, l.addr_info?.map((a) => a.local)]), (await links(pod)).map((l) => l.ifname), allocations('tiny')]);
    const tiny = { ...conf({}, { subnet: '10.250.0.0/30' }), name: 'tiny' };
    const first = await runPlugin(host.name, bridge, env('ADD', pod, 'c4', { ifname: 'net0' }), { ...tiny, bridge: 'tiny0' });
    assert.equal(first.code, 0, first.stdout);
    const state = await snapshot();
    const exhausted = await runPlugin(host.name, bridge, env('ADD', pod, 'c5', { ifname: 'net1' }), { ...tiny, bridge: 'tiny0' });
    assert.equal(exhausted.code, 1);
    assert.match(String(exhausted.json?.msg), /no IP addresses available in range set: 10\.250\.0\.1-10\.250\.0\.2/);
    assert.equal(await snapshot(), state);
    const exists = await runPlugin(host.name, bridge, env('ADD', pod, 'c6', { ifname: 'net0' }), { ...tiny, bridge: 'tiny0' });
    assert.match(String(exists.json?.msg), /container veth name provided \(net0\) already exists/);
    assert.equal(await snapshot(), state);
    const noIpam = await runPlugin(host.name, bridge, env('ADD', pod, 'c7', { ifname: 'net2' }), { ...tiny, bridge: 'tiny0', ipam: { type: 'no-such-ipam' } });
    assert.match(String(noIpam.json?.msg), /failed to find plugin "no-such-ipam" in path/);
    assert.equal(await snapshot(), state);
    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c4', { ifname: 'net0' }), { ...tiny, bridge: 'tiny0' })).code, 0);
    await host.handle.deleteLink('tiny0');
  });

  it('DEL succeeds when the namespace is already gone, and still releases the IP', async () => {
    const pod = await hosts.host('p5');
    const path = `/run/netns/${pod.name}`;
    assert.equal((await runPlugin(host.name, bridge, env('ADD', pod, 'c8'), conf())).code, 0);
    assert.equal(allocations().length, 1);
    pod.handle.close();
    pod.netns.close();
    deleteNetns(pod.name);
    const del = await runPlugin(host.name, bridge, env('DEL', path, 'c8'), conf());
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(allocations(), []);
    const noNetns = await runPlugin(host.name, bridge, env('DEL', '', 'c8', { netns: undefined }), conf());
    assert.equal(noNetns.code, 0, 'DEL without CNI_NETNS is allowed');
  });

  it('attaches at layer 2 only when there is no IPAM', async () => {
    const pod = await hosts.host('p6');
    const r = await runPlugin(host.name, bridge, env('ADD', pod, 'c9'), conf({ isGateway: false }, null));
    assert.equal(r.code, 0, r.stdout);
    assert.equal((r.json as { ips?: unknown }).ips, undefined);
    const eth0 = (await links(pod)).find((l) => l.ifname === 'eth0')!;
    assert.ok(eth0.flags.includes('UP'));
    assert.equal((await runPlugin(host.name, bridge, env('DEL', pod, 'c9'), conf({ isGateway: false }, null))).code, 0);
  });

  it('loopback brings lo up and reports its addresses', async () => {
    const pod = await hosts.host('p7');
    await pod.handle.setLinkDown('lo');
    const r = await runPlugin(host.name, join(plugins.dir, 'loopback'), env('ADD', pod, 'lo1', { ifname: 'lo' }), { cniVersion: '1.0.0', name: 'lo', type: 'loopback' });
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json, { cniVersion: '1.0.0', interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: `/run/netns/${pod.name}` }], ips: [{ interface: 0, address: '127.0.0.1/8' }, { interface: 0, address: '::1/128' }] });
    assert.equal((await pod.handle.getLink('lo')).up, true);
  });

  it('64 parallel ADDs give 64 distinct IPs; 64 DELs leave no allocation, link or address behind', async () => {
    const pods: TestHost[] = [];
    for (let i = 0; i < 64; i++) pods.push(await hosts.host(`q${i}`));
    const c = conf({ bridge: 'par0' }, { subnet: '10.245.0.0/24' });
    const adds = await Promise.all(pods.map((p, i) => runPlugin(host.name, bridge, env('ADD', p, `par-${i}`), c)));
    for (const r of adds) assert.equal(r.code, 0, r.stdout + r.stderr);
    const ips = adds.map((r) => ((r.json as { ips: { address: string }[] }).ips[0]!.address));
    assert.equal(new Set(ips).size, 64);
    assert.equal((await links(host)).filter((l) => l.master === 'par0').length, 64);
    const dels = await Promise.all(pods.map((p, i) => runPlugin(host.name, bridge, env('DEL', p, `par-${i}`), c)));
    for (const r of dels) assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal((await links(host)).filter((l) => l.master === 'par0').length, 0);
    assert.deepEqual(allocations(), []);
    for (const p of pods) assert.equal((await links(p)).some((l) => l.ifname === 'eth0'), false);
  });
});
