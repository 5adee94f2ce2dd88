// Bridge VLANs: the requests byte for byte as iproute2 sends them, and the kernel's
// answer checked against `bridge -j vlan show`. Kernels built without
// CONFIG_BRIDGE_VLAN_FILTERING (it needs 802.1Q; this CI's has neither) refuse
// vlan_filtering and every VLAN change with EOPNOTSUPP: there the tests check that
// twill reports exactly that, and that its list agrees with iproute2's (empty).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError, type BridgePortVlans } from '../../src/kernel/index.js';
import { bridgeVlanDumpRequest, bridgeVlanRequest, parseBridgeVlans } from '../../src/kernel/bridgevlan_linux.js';
import { TestHosts, type TestHost } from '../support/hosts.js';
import { bridgeJson, ipJson } from '../support/exec.js';

const ctx = { op: 'test', subject: 'wire' };
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
// ifinfomsg: family AF_BRIDGE (7), ifindex 4.
const IFI_BRIDGE_4 = '07000000 04000000 00000000 00000000';

interface IpBridgeVlan { ifname: string; vlans: { vlan: number; vlanEnd?: number; flags?: string[] }[] }
interface IpLinkDetail { ifname: string; linkinfo?: { info_kind?: string; info_data?: { vlan_filtering?: number; vlan_default_pvid?: number } } }

/** `bridge -j vlan show` in the form twill lists: one entry per VID, flags as booleans. */
async function bridgeVlanShow(h: TestHost): Promise<{ name: string; vlans: { vid: number; pvid: boolean; untagged: boolean }[] }[]> {
  const out = await bridgeJson<IpBridgeVlan[]>(h.name, ['vlan', 'show']);
  return out
    .map((p) => ({
      name: p.ifname,
      vlans: p.vlans.flatMap((v) =>
        Array.from({ length: (v.vlanEnd ?? v.vlan) - v.vlan + 1 }, (_, i) => ({
          vid: v.vlan + i,
          pvid: v.flags?.includes('PVID') ?? false,
          untagged: v.flags?.includes('Egress Untagged') ?? false,
        })),
      ),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

const twillShow = (ports: BridgePortVlans[]) =>
  ports.filter((p) => p.vlans.length > 0).map((p) => ({ name: p.name, vlans: p.vlans })).sort((a, b) => a.name.localeCompare(b.name));

async function rejectsUnsupported(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KernelError, `expected a KernelError, got ${String(e)}`);
    assert.equal(e.kind, 'unsupported');
    assert.equal(e.code, 'EOPNOTSUPP');
    return true;
  });
}

describe('bridge VLANs: the wire format', () => {
  // Captured with `strace -e sendmsg -xx bridge vlan ...` (iproute2 6.1) on a port with ifindex 4.
  it('add VID 100 as PVID, untagged: what `bridge vlan add dev v0 vid 100 pvid untagged master` sends', () => {
    const want = hex(`${IFI_BRIDGE_4} 1400 1a00 0600 0000 0100 0000 0800 0200 0600 6400`);
    assert.deepEqual(bridgeVlanRequest(4, [{ vid: 100, pvid: true, untagged: true }], {}, ctx), want);
  });

  it('add the range 5-7 tagged: what `bridge vlan add dev v0 vid 5-7 master` sends', () => {
    const want = hex(`${IFI_BRIDGE_4} 1c00 1a00 0600 0000 0100 0000 0800 0200 0800 0500 0800 0200 1000 0700`);
    assert.deepEqual(bridgeVlanRequest(4, [{ vid: 5, vidEnd: 7 }], {}, ctx), want);
  });

  it('delete VID 1: the body of `bridge vlan del dev v0 vid 1 master` (sent as RTM_DELLINK)', () => {
    const want = hex(`${IFI_BRIDGE_4} 1400 1a00 0600 0000 0100 0000 0800 0200 0000 0100`);
    assert.deepEqual(bridgeVlanRequest(4, [{ vid: 1 }], {}, ctx), want);
  });

  it('self (the bridge\'s own VLANs) sets BRIDGE_FLAGS_SELF', () => {
    const want = hex(`${IFI_BRIDGE_4} 1400 1a00 0600 0000 0200 0000 0800 0200 0000 0a00`);
    assert.deepEqual(bridgeVlanRequest(4, [{ vid: 10 }], { self: true }, ctx), want);
  });

  it('the dump asks for AF_BRIDGE with RTEXT_FILTER_BRVLAN, as `bridge vlan show` does', () => {
    assert.deepEqual(bridgeVlanDumpRequest(), hex('07000000 00000000 00000000 00000000 0800 1d00 0200 0000'));
  });

  it('several entries go in one request, in order', () => {
    const body = bridgeVlanRequest(4, [{ vid: 100, pvid: true, untagged: true }, { vid: 5, vidEnd: 7 }, { vid: 9 }], {}, ctx);
    assert.deepEqual(parseBridgeVlans(body.subarray(20)), [
      { vid: 100, pvid: true, untagged: true },
      { vid: 5, pvid: false, untagged: false },
      { vid: 6, pvid: false, untagged: false },
      { vid: 7, pvid: false, untagged: false },
      { vid: 9, pvid: false, untagged: false },
    ]);
  });

  it('refuses VIDs outside 1..4094, backwards ranges, a range as PVID, and nothing at all', () => {
    for (const bad of [[{ vid: 0 }], [{ vid: 4095 }], [{ vid: 1.5 }], [{ vid: 9, vidEnd: 3 }], [{ vid: 1, vidEnd: 4095 }], [{ vid: 2, vidEnd: 4, pvid: true }], []]) {
      assert.throws(() => bridgeVlanRequest(4, bad, {}, ctx), (e: unknown) => e instanceof KernelError && e.kind === 'invalid', JSON.stringify(bad));
    }
  });
});

describe('bridge VLANs: the kernel, against `bridge -j vlan show`', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let supported: boolean;
  before(async () => {
    h = await hosts.host('brvlan');
    await h.handle.addLink({ kind: 'bridge', name: 'probe0' });
    supported = (await h.handle.getLink('probe0')).bridge?.vlanDefaultPvid != null;
    await h.handle.deleteLink('probe0');
  });
  after(() => hosts.cleanup());

  it('reads a bridge\'s vlan_filtering and default PVID as ip does (no default PVID: no VLAN support)', async () => {
    await h.handle.addLink({ kind: 'bridge', name: 'plain0' });
    const ip = (await ipJson<IpLinkDetail[]>(h.name, ['-d', 'link', 'show', 'dev', 'plain0']))[0]!;
    const br = await h.handle.getLink('plain0');
    assert.equal(br.bridge?.vlanFiltering, (ip.linkinfo?.info_data?.vlan_filtering ?? 0) === 1);
    assert.equal(br.bridge?.vlanDefaultPvid ?? undefined, ip.linkinfo?.info_data?.vlan_default_pvid);
    assert.equal((await h.handle.getLink('lo')).bridge, null);
    await h.handle.deleteLink('plain0');
  });

  it('creates a bridge with vlan_filtering, or reports EOPNOTSUPP where the kernel has no VLAN support', async () => {
    if (!supported) {
      await rejectsUnsupported(h.handle.addLink({ kind: 'bridge', name: 'vf0', vlanFiltering: true }));
      assert.equal(await h.handle.findLink('vf0'), null);
      return;
    }
    const br = await h.handle.addLink({ kind: 'bridge', name: 'vf0', vlanFiltering: true });
    assert.equal(br.bridge?.vlanFiltering, true);
    const ip = (await ipJson<IpLinkDetail[]>(h.name, ['-d', 'link', 'show', 'dev', 'vf0']))[0]!;
    assert.equal(ip.linkinfo?.info_data?.vlan_filtering, 1);
    await h.handle.deleteLink('vf0');
  });

  it('sets a port\'s PVID, tagged ranges and removes VLAN 1, and lists what bridge vlan show lists', async () => {
    await h.handle.addLink({ kind: 'bridge', name: 'br0', up: true, ...(supported ? { vlanFiltering: true } : {}) });
    await h.handle.addLink({ kind: 'veth', name: 'v0', master: 'br0', peer: { name: 'v0p' } });
    if (!supported) {
      assert.deepEqual(twillShow(await h.handle.listBridgeVlans()), await bridgeVlanShow(h));
      assert.deepEqual(await h.handle.getBridgeVlans('v0'), []);
      await rejectsUnsupported(h.handle.addBridgeVlans('v0', [{ vid: 100, pvid: true, untagged: true }]));
      // The kernel ignores a VLAN a delete does not find, so this one is a no-op.
      await h.handle.deleteBridgeVlans('v0', [1]);
      assert.deepEqual(await bridgeVlanShow(h), []);
      await h.handle.deleteLink('v0');
      await h.handle.deleteLink('br0');
      return;
    }
    // A new port gets the bridge's default PVID (1), untagged; so does the bridge itself.
    assert.deepEqual(await h.handle.getBridgeVlans('v0'), [{ vid: 1, pvid: true, untagged: true }]);
    assert.deepEqual(twillShow(await h.handle.listBridgeVlans()), await bridgeVlanShow(h));
    await h.handle.deleteBridgeVlans('v0', [1]);
    await h.handle.addBridgeVlans('v0', [{ vid: 100, pvid: true, untagged: true }, { vid: 200, vidEnd: 202 }]);
    assert.deepEqual(await h.handle.getBridgeVlans('v0'), [
      { vid: 100, pvid: true, untagged: true },
      { vid: 200, pvid: false, untagged: false },
      { vid: 201, pvid: false, untagged: false },
      { vid: 202, pvid: false, untagged: false },
    ]);
    assert.deepEqual(twillShow(await h.handle.listBridgeVlans()), await bridgeVlanShow(h));
    const ports = await h.handle.listBridgeVlans();
    const br = await h.handle.getLink('br0');
    assert.equal(ports.find((p) => p.name === 'v0')?.masterIndex, br.ifindex);
    assert.equal(ports.find((p) => p.name === 'br0')?.masterIndex, null);
    // Adding a VID again as tagged takes its PVID and untagged flags away, as the kernel does.
    await h.handle.addBridgeVlans('v0', [{ vid: 100 }]);
    assert.deepEqual((await h.handle.getBridgeVlans('v0'))[0], { vid: 100, pvid: false, untagged: false });
    await h.handle.deleteBridgeVlans('v0', [{ vid: 200, vidEnd: 202 }, 100]);
    assert.deepEqual(await h.handle.getBridgeVlans('v0'), []);
    await h.handle.addBridgeVlans('br0', [{ vid: 7 }], { self: true });
    assert.ok((await h.handle.getBridgeVlans('br0')).some((v) => v.vid === 7));
    assert.deepEqual(twillShow(await h.handle.listBridgeVlans()), await bridgeVlanShow(h));
    await h.handle.deleteLink('v0');
    await h.handle.deleteLink('br0');
  });
});
