import { pluginMain } from '../cni/runner.js';
import { loadPlugin, type PluginType } from '../plugins/registry.js';

/** Runs this process as the CNI plugin `type` and exits with its status. */
export async function runPlugin(type: PluginType, version: string): Promise<void> {
  const plugin = await loadPlugin(type);
  const code = await pluginMain(plugin, `CNI plugin ${type} (twill ${version})`);
  process.exitCode = code;
}
