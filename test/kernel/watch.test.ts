import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { KernelEvent, Watcher } from '../../src/kernel/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

/** Collects events until one matches, or fails after a second. */
function next(w: Watcher, match: (e: KernelEvent) => boolean, what: string): Promise<KernelEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      w.off('event', on);
      reject(new Error(`no ${what} event within 1 s`));
    }, 1000);
    const on = (e: KernelEvent) => {
      if (!match(e)) return;
      clearTimeout(timer);
      w.off('event', on);
      resolve(e);
    };
    w.on('event', on);
  });
}

describe('watches', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  let w: Watcher;
  before(async () => {
    h = await hosts.host('a');
    w = h.handle.watch(['link', 'addr', 'route', 'neigh']);
  });
  after(async () => {
    w.close();
    await hosts.cleanup();
  });

  it('link new and del', async () => {
    const added = next(w, (e) => e.kind === 'link' && e.type === 'new' && e.link.name === 'twbr0', 'link new');
    await h.handle.addLink({ kind: 'bridge', name: 'twbr0', up: true });
    const ev = await added;
    assert.equal(ev.kind === 'link' && ev.link.kind, 'bridge');
    const gone = next(w, (e) => e.kind === 'link' && e.type === 'del' && e.link.name === 'twtmp0', 'link del');
    await h.handle.addLink({ kind: 'bridge', name: 'twtmp0' });
    await h.handle.deleteLink('twtmp0');
    await gone;
  });

  it('address new and del, v4 and v6', async () => {
    const a4 = next(w, (e) => e.kind === 'addr' && e.type === 'new' && e.addr.address === '10.9.0.1', 'addr new');
    const a6 = next(w, (e) => e.kind === 'addr' && e.type === 'new' && e.addr.address === 'fd09::1', 'addr6 new');
    await h.handle.addAddr('twbr0', '10.9.0.1/24');
    await h.handle.addAddr('twbr0', 'fd09::1/64', { noDad: true });
    await Promise.all([a4, a6]);
    const d4 = next(w, (e) => e.kind === 'addr' && e.type === 'del' && e.addr.address === '10.9.0.1', 'addr del');
    await h.handle.deleteAddr('twbr0', '10.9.0.1/24');
    await d4;
  });

  it('route new and del', async () => {
    await h.handle.addAddr('twbr0', '10.9.0.1/24');
    const r = next(w, (e) => e.kind === 'route' && e.type === 'new' && e.route.dst === '10.77.0.0/16', 'route new');
    await h.handle.addRoute({ dst: '10.77.0.0/16', gateway: '10.9.0.254', protocol: 87 });
    const ev = await r;
    assert.equal(ev.kind === 'route' && ev.route.protocol, 87);
    const d = next(w, (e) => e.kind === 'route' && e.type === 'del' && e.route.dst === '10.77.0.0/16', 'route del');
    await h.handle.deleteRoute({ dst: '10.77.0.0/16' });
    await d;
  });

  it('neighbour and FDB new and del', async () => {
    await h.handle.addLink({ kind: 'vxlan', name: 'flannel.1', vni: 1, local: '10.9.0.1', up: true });
    const n = next(w, (e) => e.kind === 'neigh' && e.type === 'new' && e.neigh.ip === '10.244.3.0', 'neigh new');
    await h.handle.addNeigh('flannel.1', '10.244.3.0', '0a:58:0a:f4:03:00');
    await n;
    const f = next(w, (e) => e.kind === 'fdb' && e.type === 'new' && e.fdb.mac === '0a:58:0a:f4:03:00' && e.fdb.dst === '10.9.0.3', 'fdb new');
    await h.handle.appendFdb('flannel.1', '0a:58:0a:f4:03:00', '10.9.0.3');
    await f;
    const nd = next(w, (e) => e.kind === 'neigh' && e.type === 'del' && e.neigh.ip === '10.244.3.0', 'neigh del');
    const fd = next(w, (e) => e.kind === 'fdb' && e.type === 'del' && e.fdb.mac === '0a:58:0a:f4:03:00', 'fdb del');
    await h.handle.deleteNeigh('flannel.1', '10.244.3.0');
    await h.handle.deleteFdb('flannel.1', '0a:58:0a:f4:03:00', '10.9.0.3');
    await Promise.all([nd, fd]);
  });

  it('sees only its own namespace', async () => {
    const other = await hosts.host('b');
    const seen: string[] = [];
    const on = (e: KernelEvent) => { if (e.kind === 'link') seen.push(e.link.name); };
    w.on('event', on);
    await other.handle.addLink({ kind: 'bridge', name: 'twelse0' });
    const marker = next(w, (e) => e.kind === 'link' && e.link.name === 'twmark0', 'marker');
    await h.handle.addLink({ kind: 'bridge', name: 'twmark0' });
    await marker;
    w.off('event', on);
    assert.equal(seen.includes('twelse0'), false);
  });
});
