// Talking to an etcd that listens on a test underlay: a client process in a
// test namespace (etcd-client-worker.ts), one request at a time.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const WORKER = fileURLToPath(new URL('./etcd-client-worker.js', import.meta.url));

export class EtcdClientProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private stderr = '';

  /** A client in namespace `netns` for `endpoints`. */
  constructor(netns: string, endpoints: string[]) {
    this.child = spawn('ip', ['netns', 'exec', netns, process.execPath, WORKER, ...endpoints], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const p = this.pending.shift();
      if (!p) return;
      const answer = JSON.parse(line) as { ok: boolean; result?: unknown; error?: string };
      if (answer.ok) p.resolve(answer.result);
      else p.reject(new Error(`etcd client: ${answer.error}`));
    });
    this.child.on('close', (code) => {
      for (const p of this.pending.splice(0)) p.reject(new Error(`etcd client exited (${code}): ${this.stderr}`));
    });
  }

  private call<T>(req: object): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  put(key: string, value: string, ttlSec?: number): Promise<{ at: number }> {
    return this.call({ op: 'put', key, value, ttlSec });
  }

  putMany(items: { key: string; value: string }[], ttlSec?: number): Promise<{ at: number }> {
    return this.call({ op: 'putMany', items, ttlSec });
  }

  delete(key: string): Promise<{ deleted: number; at: number }> {
    return this.call({ op: 'delete', key });
  }

  get(prefix: string): Promise<{ kvs: { key: string; value: string }[] }> {
    return this.call({ op: 'get', prefix });
  }

  close(): Promise<void> {
    this.child.stdin.end();
    return new Promise((resolve) => {
      if (this.child.exitCode !== null) resolve();
      else this.child.once('close', () => resolve());
    });
  }
}
