import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { DEFAULT_CNI_SOCKET } from '../cni/forward.js';
import type { ExplainCliOptions } from './explain.js';
import type { LogLevel } from '../agent/options.js';

// Set by scripts/bundle.mjs (esbuild `define`): a bundle or SEA has no package.json beside it.
declare const TWILL_VERSION: string | undefined;

function packageVersion(): string {
  if (typeof TWILL_VERSION === 'string') return TWILL_VERSION;
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function buildProgram() {
  const { Command, Option } = await import('commander');
  const { PLUGIN_TYPES } = await import('../plugins/registry.js');
  const { LOG_LEVELS } = await import('../agent/options.js');
  const program = new Command('twill')
    .description(
      'A pod network for Kubernetes: every pod its own IP, across nodes, without NAT.\n' +
        'Drop-in for flannel (net-conf.json, subnet.env, etcd layout, VXLAN) and the CNI reference plugins.',
    )
    .version(packageVersion(), '-v, --version', 'print the version')
    .showHelpAfterError('(run "twill --help" for usage)')
    .addHelpText(
      'after',
      '\nEverything twill does to the kernel needs root (CAP_NET_ADMIN).',
    );

  const cni = program.command('cni').description('CNI plugins: install them for a container runtime');
  cni
    .command('install')
    .description(`install the CNI plugins (${PLUGIN_TYPES.join(', ')}) into DIR`)
    .requiredOption('--dir <DIR>', 'directory to install into (it must exist), e.g. /opt/cni/bin')
    .option('--prefix <P>', 'install as P<name>, e.g. --prefix twill- gives twill-bridge')
    .addHelpText(
      'after',
      [
        '',
        'Installs one self-contained executable (a Node single executable application: the node',
        'needs no Node.js) with a name per plugin (hard links). Each name runs as the plugin it',
        'names, and a plugin delegating to another one of the same file (bridge to host-local)',
        'runs it in-process. Each name is replaced by a rename, so plugins that are running keep',
        'running and a runtime never sees a half-written file.',
        '',
        'From a checkout it installs dist/sea/twill, built first (a few seconds) when it is missing',
        'or older than the sources ("npm run build:sea" builds it ahead). Run from an installed',
        'executable (named anything but a plugin), it installs itself.',
        '',
        'Example:',
        '  twill cni install --dir /opt/cni/bin',
        '  twill cni install --dir /opt/cni/bin --prefix twill-    # twill-bridge, twill-host-local, ...',
      ].join('\n'),
    )
    .action(async (opts: { dir: string; prefix?: string }, command: { error(message: string): never }) => {
      const { cniInstall, InstallError } = await import('./cni-install.js');
      try {
        cniInstall({ dir: opts.dir, prefix: opts.prefix ?? '' }, packageVersion());
      } catch (e) {
        if (e instanceof InstallError) command.error(`twill cni install: ${e.message}`);
        throw e;
      }
    });
  cni
    .command('serve')
    .description('serve CNI calls on a unix socket: plugin processes hand their calls over and skip the cold work')
    .option('--socket <PATH>', 'the socket the plugins look for (TWILL_CNI_SOCKET in their environment, else the default)', DEFAULT_CNI_SOCKET)
    .addOption(new Option('--log-level <LEVEL>', 'debug (every call), info, warn or error').choices([...LOG_LEVELS]).default('info').env('TWILL_LOG_LEVEL'))
    .addHelpText(
      'after',
      [
        '',
        'A plugin process run by the container runtime (bridge, host-local, loopback, portmap, flannel)',
        'first looks for this socket: TWILL_CNI_SOCKET in its environment, else /run/twill/cni.sock',
        '(TWILL_CNI_SOCKET=off: never). When a server is there, the plugin sends it the call and prints',
        'its answer; the work runs in this process, whose code is loaded and compiled already. The answer',
        'is the one the plugin would have given. The plugin runs the call itself when no server listens,',
        'or when this server cannot see what the plugin sees: another mount or network namespace (run',
        'this on the host, not in a container), another working directory, another twill version.',
        '',
        '`twill agent --cni-socket PATH` serves the same way, once the node is set up. Logs are JSON',
        'lines on stderr. SIGTERM stops it: calls in progress finish, the socket is removed.',
        '',
        'Example:',
        '  twill cni serve --socket /run/twill/cni.sock',
      ].join('\n'),
    )
    .action(async (opts: { socket: string; logLevel: LogLevel }, command: { error(message: string): never }) => {
      const { startCniServer } = await import('./cni-serve.js');
      const { CniServerError } = await import('../cni/server.js');
      const { createLogger, logCniCall } = await import('../agent/log.js');
      const log = createLogger(opts.logLevel, process.env.NODE_NAME ?? hostname());
      // Signals are caught before the socket appears: a stop that comes while it starts still removes it.
      let stopping: string | null = null;
      let onStop: () => void = () => undefined;
      const stop = (signal: string) => {
        stopping = signal;
        onStop();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      let server: Awaited<ReturnType<typeof startCniServer>>;
      try {
        server = await startCniServer(opts.socket, packageVersion(), (e) => logCniCall(log, e), (e) => log.error({ err: e.message }, 'CNI socket failed'));
      } catch (e) {
        if (e instanceof CniServerError) command.error(`twill cni serve: ${e.message}`);
        throw e;
      }
      log.info({ socket: opts.socket }, 'serving CNI calls');
      await new Promise<void>((resolve) => {
        onStop = () => {
          log.info({ signal: stopping }, 'stopping: finishing the calls in progress');
          void server.close().then(resolve);
        };
        if (stopping) onStop();
      });
    });
  const { registerAgentCommand, kubeStoreOptions } = await import('./agent-command.js');
  registerAgentCommand(program, packageVersion());
  const explainCmd = program
    .command('explain')
    .description("read this node's network (every namespace its veths lead into) and explain it: bridges, pods, overlay, findings")
    .option('--netns <NAME>', 'explain the node in this named network namespace (/run/netns/NAME) instead of the current one')
    .option('--format <F>', 'text, json, svg or html', 'text')
    .option('--out <FILE>', 'write to FILE instead of stdout')
    .option('--subnet-file <F>', "the node agent's subnet.env", '/run/flannel/subnet.env')
    .option('--cni-data-dir <D>', "host-local's data directory", '/var/lib/cni/networks')
    .option('--store <SPEC>', "the agents' lease store, local:PATH | etcd:URL[,URL] | kube: the other nodes' leases become what the overlay must hold")
    .option('--etcd-endpoints <URLS>', 'etcd endpoints, comma-separated (same as --store etcd:URLS)')
    .option('--etcd-prefix <PREFIX>', 'etcd key prefix, as the agents use', '/coreos.com/network')
    .option('--etcd-cafile <FILE>', 'CA certificate to verify etcd')
    .option('--etcd-certfile <FILE>', 'client certificate for etcd')
    .option('--etcd-keyfile <FILE>', 'client key for etcd')
    .option('--etcd-username <NAME>', 'etcd user')
    .option('--etcd-password <PASSWORD>', 'etcd password');
  // The agent's own definitions (flags and FLANNELD_* variables), so that both resolve them alike.
  for (const o of kubeStoreOptions('shown')) explainCmd.addOption(o);
  explainCmd
    .addOption(new Option('--node-name <NAME>', "this node's Node with --store kube: its lease is this node's own (default: the hostname)").env('NODE_NAME'))
    .option('--exit-zero', 'exit 0 even when a finding is an error')
    .addHelpText(
      'after',
      [
        '',
        'Reads only; changes nothing. Needs root (it enters the pods\' namespaces).',
        'A veth shown by `ip link` as vethXXXX@if3 is explained as "→ eth0 (ifindex 3) in pod namespace X":',
        'the number is the ifindex of its other end inside the pod\'s namespace, not a link of this one.',
        '',
        'With --store, the leases of the other nodes are the truth for the overlay: each must have its',
        'neighbour, FDB entry and route (vxlan) or its route (host-gw) here, and routes, FDB entries and',
        'neighbours of nodes that no lease names are stale. Without it, the overlay is judged from the',
        'kernel state alone (a route without its neighbour, a neighbour without its FDB entry, ...).',
        '',
        'With --store kube (or --kube-subnet-mgr), as the agents of a cluster run with --kube-subnet-mgr:',
        'the leases are the Nodes annotated by flannel or twill; the API is found as `twill agent` finds',
        'it (--kubeconfig-file, --kube-api-url, else in-cluster). explain only lists nodes (RBAC: "list"',
        'on "nodes"): it writes no annotation and no node condition.',
        '',
        'Exit status: 0 when no finding is an error (warnings and info do not count), 1 when one is',
        '(0 with --exit-zero), 2 for bad arguments.',
        'Findings and their fixes: docs/TROUBLESHOOTING.md. JSON schema: the same file, "JSON output".',
        '',
        'Examples:',
        '  twill explain',
        '  twill explain --store etcd:http://10.0.0.1:2379 --format html --out node.html',
        '  twill explain --store kube --kubeconfig-file /etc/kubernetes/admin.conf --node-name node1',
        '  twill explain --netns lab-n1 --store local:/var/lib/twill/leases.db --subnet-file /run/lab-n1/subnet.env',
      ].join('\n'),
    )
    .action(async (opts: ExplainCliOptions & { format: string }, command: { error(message: string, options?: { exitCode?: number }): never }) => {
      const { explainCommand, ExplainUsageError, EXIT_USAGE } = await import('./explain.js');
      try {
        process.exitCode = await explainCommand(opts);
      } catch (e) {
        if (e instanceof ExplainUsageError) command.error(`twill explain: ${e.message}`, { exitCode: EXIT_USAGE });
        throw e;
      }
    });
  const { registerLabCommand } = await import('./lab-command.js');
  registerLabCommand(program);
  return program;
}

/**
 * Evaluates every module the CLI and the plugins may run (for a V8 startup
 * snapshot: a process started from it finds them loaded). Does no I/O.
 */
export async function preload(): Promise<void> {
  const { PLUGIN_TYPES, loadPlugin } = await import('../plugins/registry.js');
  const [, , , ...plugins] = await Promise.all([import('./plugin.js'), import('./cni-install.js'), import('commander'), ...PLUGIN_TYPES.map((t) => loadPlugin(t))]);
  const { warmUp } = await import('./warmup.js');
  await warmUp(plugins);
}

export async function main(argv: string[]): Promise<void> {
  // A multi-call binary: installed as "bridge", "host-local", ... it is that CNI plugin.
  const { pluginTypeOf } = await import('../plugins/registry.js');
  const asPlugin = pluginTypeOf(argv[1] ?? '');
  if (asPlugin) {
    const { runPlugin } = await import('./plugin.js');
    await runPlugin(asPlugin, packageVersion());
    return;
  }
  const program = await buildProgram();
  if (argv.length <= 2) {
    program.outputHelp();
    return;
  }
  if (argv[2] === 'agent') {
    const { normalizeGoFlags } = await import('./agent-command.js');
    argv = [...argv.slice(0, 3), ...normalizeGoFlags(argv.slice(3))];
  }
  await program.parseAsync(argv);
}
