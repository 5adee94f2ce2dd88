import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const bin = new URL('../../../bin/twill', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

async function twill(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(bin, args);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('the twill command', () => {
  it('--version prints the package version', async () => {
    const r = await twill(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it('--help says what twill is and how to use it', async () => {
    const r = await twill(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: twill/m);
    assert.match(r.stdout, /pod network for Kubernetes/);
  });

  it('no arguments prints the help', async () => {
    const r = await twill([]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: twill/);
  });

  it('an unknown option is an error that points at --help', async () => {
    const r = await twill(['--no-such-flag']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown option '--no-such-flag'/);
    assert.match(r.stderr, /twill --help/);
  });
});
