import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Handle, KernelError, createNetns, deleteNetns, listNetns, netnsExists, openNetns } from '../../src/kernel/index.js';
import { RUN_PREFIX, TestHosts } from '../support/hosts.js';
import { ipJson, run } from '../support/exec.js';

const rejectsSync = (fn: () => unknown, kind: string, text: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof KernelError && e.kind === kind && text.test(e.message));

describe('network namespaces', () => {
  const name = `${RUN_PREFIX}-${process.pid}-ns`;
  after(() => {
    if (netnsExists(name)) deleteNetns(name);
  });

  it('creates a named namespace that ip sees, and deletes it', async () => {
    const ns = createNetns(name);
    try {
      assert.ok(existsSync(`/run/netns/${name}`));
      assert.ok(listNetns().includes(name));
      assert.ok((await run('ip', ['netns', 'list'])).includes(name));
      const links = await ipJson<{ ifname: string }[]>(name, ['link', 'show']);
      assert.deepEqual(links.map((l) => l.ifname), ['lo'], 'a new namespace holds only lo');
    } finally {
      ns.close();
    }
    deleteNetns(name);
    assert.equal(netnsExists(name), false);
    assert.equal((await run('ip', ['netns', 'list'])).includes(name), false);
  });

  it('opens a namespace by name and by path, with the same identity', () => {
    const ns = createNetns(name);
    const byName = openNetns(name);
    const byPath = openNetns(`/run/netns/${name}`);
    assert.equal(byName.key, ns.key);
    assert.equal(byPath.key, ns.key);
    const self = openNetns('/proc/self/ns/net');
    assert.notEqual(self.key, ns.key);
    for (const n of [ns, byName, byPath, self]) n.close();
    deleteNetns(name);
  });

  it('runs code inside a namespace and comes back to the original one', () => {
    const ns = createNetns(name);
    try {
      const inside = ns.run(() => openNetns('/proc/thread-self/ns/net'));
      const outside = openNetns('/proc/thread-self/ns/net');
      assert.equal(inside.key, ns.key);
      assert.notEqual(outside.key, ns.key);
      assert.throws(() => ns.run(() => { throw new Error('boom'); }), /boom/);
      const after = openNetns('/proc/thread-self/ns/net');
      assert.equal(after.key, outside.key, 'an exception inside still returns the thread home');
      for (const n of [inside, outside, after]) n.close();
    } finally {
      ns.close();
      deleteNetns(name);
    }
  });

  it('a link made through a handle lands in that namespace only', async () => {
    const hosts = new TestHosts();
    try {
      const h = await hosts.host('only');
      await h.handle.addLink({ kind: 'bridge', name: 'twonly0' });
      assert.ok((await ipJson<{ ifname: string }[]>(h.name, ['link', 'show'])).some((l) => l.ifname === 'twonly0'));
      assert.equal((await ipJson<{ ifname: string }[]>(null, ['link', 'show'])).some((l) => l.ifname === 'twonly0'), false);
    } finally {
      await hosts.cleanup();
    }
  });

  describe('errors', () => {
    it('creating one that exists', () => {
      createNetns(name).close();
      try {
        rejectsSync(() => createNetns(name), 'exists', new RegExp(`create netns "${name}".*EEXIST`));
      } finally {
        deleteNetns(name);
      }
    });
    it('deleting one that does not exist', () => rejectsSync(() => deleteNetns(`${name}-gone`), 'not-found', /delete netns ".*-gone".*ENOENT/));
    it('opening one that does not exist', () => rejectsSync(() => openNetns(`${name}-gone`), 'not-found', /open netns ".*-gone".*ENOENT/));
    it('a handle on one that does not exist', () => rejectsSync(() => Handle.open(`${name}-gone`), 'not-found', /ENOENT/));
    it('a name with a slash', () => rejectsSync(() => createNetns('../../etc'), 'invalid', /create netns "\.\.\/\.\.\/etc": a namespace name must be/));
    it('an empty name', () => rejectsSync(() => createNetns(''), 'invalid', /namespace name/));
    it('"." and ".."', () => {
      rejectsSync(() => createNetns('.'), 'invalid', /namespace name/);
      rejectsSync(() => deleteNetns('..'), 'invalid', /namespace name/);
    });
  });
});
