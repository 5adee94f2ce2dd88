import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NetnsAddon {
  runInNetns<T>(fd: number, fn: () => T): T;
  createNetns(name: string): void;
  deleteNetns(name: string): void;
  gettid(): number;
}

let addon: NetnsAddon | undefined;

/** The setns addon (native/netns.c), loaded on first use. */
export function netnsAddon(): NetnsAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    // dist/src/kernel/native.js → <root>/native/build/Release/
    const path = fileURLToPath(new URL('../../../native/build/Release/twill_netns.node', import.meta.url));
    try {
      addon = require(path) as NetnsAddon;
    } catch (e) {
      throw new Error(`cannot load twill's netns addon at ${path} (run "npm ci" to build it): ${(e as Error).message}`);
    }
  }
  return addon;
}
