import { readFileSync, writeFileSync } from 'node:fs';
import { invalidArgument } from './errors.js';
import type { Netns } from './netns.js';

/**
 * "net.ipv4.ip_forward" or "net/ipv4/conf/flannel.1/rp_filter" → /proc/sys path.
 * Use the slash form when a segment (an interface name) contains dots.
 */
export function sysctlPath(key: string): string {
  const segments = key.includes('/') ? key.split('/') : key.split('.');
  const ctx = { op: 'access', subject: `sysctl "${key}"` };
  if (segments[0] !== 'net' || segments.length < 3 || segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('\0'))) {
    throw invalidArgument(ctx, 'twill only touches network sysctls: the key must look like net.ipv4.ip_forward');
  }
  return `/proc/sys/${segments.join('/')}`;
}

// /proc/sys/net belongs to the namespace of the thread that opens the file, so
// these must stay synchronous: async fs would open it on a libuv pool thread,
// which is still in the root namespace.
function inNetns<T>(netns: Netns | null, fn: () => T): T {
  return netns ? netns.run(fn) : fn();
}

export function readSysctl(netns: Netns | null, key: string): string {
  const path = sysctlPath(key);
  return inNetns(netns, () => readFileSync(path, 'utf8')).trim();
}

export function writeSysctl(netns: Netns | null, key: string, value: string | number): void {
  const path = sysctlPath(key);
  inNetns(netns, () => writeFileSync(path, `${value}\n`));
}
