import { pluginMain, printJson, readStdin } from '../cni/runner.js';
import { flushTrace, mark, markDuration } from '../cni/trace.js';
import { callerView, cniSocketPath, forwardCall, forwardRequest } from '../cni/forward.js';
import { CniError } from '../cni/errors.js';
import { loadPlugin, type PluginType } from '../plugins/registry.js';
import { useBlockingExec } from '../firewall/exec.js';

/** Runs this process as the CNI plugin `type` and exits with its status. */
export async function runPlugin(type: PluginType, version: string): Promise<void> {
  mark('entry');
  const command = process.env.CNI_COMMAND;
  const socket = command && command !== 'VERSION' ? cniSocketPath(process.env) : null;
  let stdin: Buffer | undefined;
  if (socket) {
    stdin = await readStdin();
    mark('stdin');
    const code = await forwarded(type, version, socket, stdin);
    // The answer is written (synchronously: stdout is a pipe or a file); tearing
    // the runtime down gently would cost the runtime's caller ~10 ms per call.
    if (code !== null) process.exit(code);
  }
  // Nothing runs beside the command: its helpers (iptables, nft) may be waited for synchronously.
  useBlockingExec();
  const plugin = await loadPlugin(type);
  mark('loaded');
  process.exit(await pluginMain(plugin, `CNI plugin ${type} (twill ${version})`, stdin));
}

/** The call handed to a twill server: its exit status, or null when this process must run it. */
async function forwarded(type: PluginType, version: string, socket: string, stdin: Buffer): Promise<number | null> {
  let answer;
  try {
    answer = await forwardCall(socket, () => forwardRequest(type, process.env, stdin, callerView(version)));
  } catch (e) {
    if (!(e instanceof CniError)) throw e;
    process.stdout.write(printJson(e.toJSON(configVersion(stdin))));
    return 1;
  }
  if (answer === null) return null;
  if (!answer.served) {
    // The runtime logs a plugin's stderr: say why the warm path was not taken.
    process.stderr.write(`twill ${type}: the CNI server at ${socket} did not take the call (${answer.reason}); running it here\n`);
    return null;
  }
  markDuration('server:ms', answer.ms);
  mark('done');
  flushTrace();
  process.stdout.write(answer.stdout);
  return answer.code;
}

/** The config's cniVersion, for an error's JSON (none if the config is not JSON). */
function configVersion(stdin: Buffer): string | undefined {
  try {
    const v = (JSON.parse(stdin.toString('utf8')) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && v !== '' ? v : undefined;
  } catch {
    return undefined;
  }
}
