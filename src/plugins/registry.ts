// Plugin types twill provides, loaded on demand: a plugin process pays only
// for the code of the plugin it runs.
import type { Plugin } from '../cni/plugin.js';

export const PLUGIN_TYPES = ['bridge', 'host-local', 'loopback', 'flannel', 'portmap'] as const;
export type PluginType = (typeof PLUGIN_TYPES)[number];

export async function loadPlugin(type: PluginType): Promise<Plugin> {
  switch (type) {
    case 'bridge':
      return (await import('./bridge/index.js')).bridge;
    case 'host-local':
      return (await import('./host-local/index.js')).hostLocal;
    case 'loopback':
      return (await import('./loopback/index.js')).loopback;
    case 'flannel':
      return (await import('./flannel/index.js')).flannel;
    case 'portmap':
      return (await import('./portmap/index.js')).portmap;
  }
}

/**
 * Which plugin a multi-call binary is, from the name it was run as:
 * "bridge", or with an install prefix, "twill-bridge".
 */
export function pluginTypeOf(invokedAs: string): PluginType | null {
  const base = invokedAs.slice(invokedAs.lastIndexOf('/') + 1);
  return PLUGIN_TYPES.find((t) => base === t || base.endsWith(`-${t}`) || base.endsWith(t)) ?? null;
}
