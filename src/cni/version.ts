/** Every CNI spec version twill speaks, oldest first. */
export const SUPPORTED_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];

/** The newest version; what VERSION reports, as libcni's Current() does. */
export const CURRENT_VERSION: CniVersion = '1.1.0';

/** Config files without cniVersion are 0.1.0 (libcni's rule). */
export const DEFAULT_CONFIG_VERSION = '0.1.0';

function parts(v: string): [number, number, number] | null {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

export function isSemver(v: string): boolean {
  return parts(v) !== null;
}

/** -1, 0, 1; both must be x.y.z (check with isSemver first). */
export function compareVersions(a: string, b: string): number {
  const pa = parts(a)!;
  const pb = parts(b)!;
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  return 0;
}

export const atLeast = (v: string, min: string): boolean => compareVersions(v, min) >= 0;

