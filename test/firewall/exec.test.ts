import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { execChecked, execIn } from '../../src/firewall/exec.js';
import { Nft, type NftCommand } from '../../src/firewall/nftables.js';
import { FirewallError } from '../../src/firewall/index.js';
import { TestHosts, type TestHost } from '../support/hosts.js';

describe('firewall commands run inside a namespace', () => {
  const hosts = new TestHosts();
  let h: TestHost;
  before(async () => {
    h = await hosts.host('fwexec');
  });
  after(() => hosts.cleanup());

  it('a child started from inside Netns.run lives in that namespace', async () => {
    const r = await execIn('stat', ['-L', '-c', '%d:%i', '/proc/self/ns/net'], { netns: h.netns });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), h.netns.key);
    const self = statSync('/proc/self/ns/net');
    const here = await execIn('stat', ['-L', '-c', '%d:%i', '/proc/self/ns/net'], { netns: null });
    assert.equal(here.stdout.trim(), `${self.dev}:${self.ino}`, 'netns null: the current namespace');
  });

  it('stdin reaches iptables-restore, and the rule lands in the namespace only', async () => {
    await execChecked('test restore', 'iptables-nft-restore', ['-w', '--noflush'], { netns: h.netns, input: '*filter\n:TWEXEC - [0:0]\nCOMMIT\n' });
    assert.match(await h.exec('iptables-nft-save', ['-t', 'filter']), /^:TWEXEC - /m);
  });

  it('a failure names the command, the namespace, the exit code and stderr', async () => {
    await assert.rejects(
      execChecked('do the impossible', 'iptables-nft', ['-w', '-t', 'nat', '-X', 'TWNOSUCH'], { netns: h.netns }),
      (e: unknown) =>
        e instanceof FirewallError &&
        e.message.startsWith(`do the impossible in netns "${h.name}": \`iptables-nft -w -t nat -X TWNOSUCH\` exited with 1: `) &&
        /No chain|does not exist/.test(e.stderr) &&
        e.netns === h.name &&
        e.exitCode === 1,
    );
  });

  it('a missing program is an error saying so', async () => {
    await assert.rejects(execIn('twill-no-such-program', [], { netns: h.netns }), /twill-no-such-program is not installed/);
  });

  it('a command that does not finish is stopped, with an error saying so', async () => {
    await assert.rejects(execChecked('wait', 'sleep', ['10'], { netns: h.netns, timeoutMs: 200 }), /`sleep 10` did not finish in 0.2 s$/);
  });

  it('a command that exits without reading its input does not break the caller', async () => {
    const r = await execIn('true', [], { netns: h.netns, input: 'x'.repeat(1 << 20) });
    assert.equal(r.code, 0);
  });

  it('nft -j takes the JSON as an argument, or as a file when asked (never stdin)', async () => {
    const nft = new Nft(h.netns);
    await nft.run([{ add: { table: { family: 'inet', name: 'twexec_arg' } } }], 'test');
    await nft.run([{ add: { table: { family: 'inet', name: 'twexec_file' } } }], 'test', true);
    const tables = await h.exec('nft', ['list', 'tables']);
    assert.match(tables, /table inet twexec_arg/);
    assert.match(tables, /table inet twexec_file/);
    assert.equal(await nft.listTable('inet', 'twexec_none'), null, 'a missing table lists as null');
  });

  it('a batch too long for one argument goes through a file, still as one transaction', async () => {
    const nft = new Nft(h.netns);
    const T = { family: 'inet', table: 'twexec_big' } as const;
    const rules = Array.from({ length: 1000 }, (_, i): NftCommand => ({
      add: { rule: { ...T, chain: 'c', comment: `rule ${i} ${'x'.repeat(40)}`, expr: [{ match: { op: '==', left: { meta: { key: 'mark' } }, right: i } }, { accept: null }] } },
    }));
    const batch: NftCommand[] = [{ add: { table: { family: 'inet', name: 'twexec_big' } } }, { add: { chain: { ...T, name: 'c' } } }, ...rules];
    assert.ok(JSON.stringify({ nftables: batch }).length > 131072, 'longer than one argument may be');
    await nft.run(batch, 'test');
    assert.equal((await nft.listTable('inet', 'twexec_big'))?.rules.length, 1000);
  });
});
