import { closeSync, openSync } from 'node:fs';
import { netnsAddon } from '../kernel/native.js';

/**
 * An flock on a file, as the reference plugins take it (their store's `lock`
 * file): twill and the reference can then share one data dir safely. Waiting
 * polls, so the event loop stays free.
 */
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class FileLock {
  private fd: number | null = null;

  constructor(readonly path: string) {}

  async acquire(): Promise<void> {
    // Created 0600 if missing, as the reference does.
    const fd = openSync(this.path, 'a+', 0o600);
    let delay = 1;
    try {
      while (!netnsAddon().tryLock(fd, true)) {
        await sleep(delay);
        delay = Math.min(delay * 2, 25);
      }
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.fd = fd;
  }

  release(): void {
    if (this.fd === null) return;
    netnsAddon().unlock(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  async with<T>(fn: () => Promise<T> | T): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
