import { readFileSync } from 'node:fs';
import type { Netns } from './netns.js';

const NAME = /^[a-z0-9_]+$/;

/**
 * A file of /proc/net as the namespace sees it (ip_tables_names, dev, ...), or
 * null when the kernel has no such file. Read synchronously through
 * /proc/thread-self: the thread that entered the namespace is the one reading.
 */
export function readProcNet(netns: Netns | null, name: string): string | null {
  if (!NAME.test(name)) throw new Error(`readProcNet: "${name}" is not a /proc/net file name`);
  const read = () => {
    try {
      return readFileSync(`/proc/thread-self/net/${name}`, 'utf8');
    } catch {
      return null;
    }
  };
  return netns ? netns.run(read) : read();
}
