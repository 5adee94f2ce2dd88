// The CNI server (src/cni/server.ts) with twill's plugins: for `twill cni serve`
// and for the agent's --cni-socket.
import { CniServer, type CniCallEvent } from '../cni/server.js';
import { PLUGIN_TYPES, loadPlugin, type PluginType } from '../plugins/registry.js';

export function startCniServer(socket: string, twill: string, onCall: (e: CniCallEvent) => void, onError: (e: Error) => void): Promise<CniServer> {
  return CniServer.listen({
    socket,
    twill,
    loadPlugin: (type) => ((PLUGIN_TYPES as readonly string[]).includes(type) ? loadPlugin(type as PluginType) : null),
    onCall,
    onError,
  });
}
