import { pluginMain } from '../cni/runner.js';
import { mark } from '../cni/trace.js';
import { loadPlugin, type PluginType } from '../plugins/registry.js';
import { useBlockingExec } from '../firewall/exec.js';

/** Runs this process as the CNI plugin `type` and exits with its status. */
export async function runPlugin(type: PluginType, version: string): Promise<void> {
  mark('entry');
  // Nothing runs beside the command: its helpers (iptables, nft) may be waited for synchronously.
  useBlockingExec();
  const plugin = await loadPlugin(type);
  mark('loaded');
  const code = await pluginMain(plugin, `CNI plugin ${type} (twill ${version})`);
  // The answer is written (synchronously: stdout is a pipe or a file); tearing
  // the runtime down gently would cost the runtime's caller ~10 ms per call.
  process.exit(code);
}
