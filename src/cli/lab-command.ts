// `twill lab ...`: a whole cluster of network-namespace nodes and pods on this
// machine (src/lab/). The lab's modules load only when a lab subcommand runs.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';

const DEFAULT_NAME = 'lab';

const parseCount = (name: string, min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
};

const nameOption = () => new Option('--name <N>', 'the lab\'s name (its namespaces are twl-<N>-...)').default(DEFAULT_NAME);

/** Runs an action; a failure the user can act on prints as one message (no stack) and exits 1. */
async function guarded(what: string, fn: () => Promise<void>): Promise<void> {
  const fail = (message: string) => {
    // Not command.error(): a failed lab is no usage mistake, so no "see --help" line under it.
    process.stderr.write(`twill lab ${what}: ${message}\n`);
    process.exitCode = 1;
  };
  if (process.getuid?.() !== 0) return fail('needs root (it creates network namespaces; the machine\'s own network is never changed)');
  try {
    await fn();
  } catch (e) {
    fail((e as Error).message);
  }
}

export function registerLabCommand(program: Command): void {
  const lab = program
    .command('lab')
    .description('a cluster on this machine: nodes and pods as network namespaces, twill agent and CNI plugins on each node')
    .addHelpText(
      'after',
      [
        '',
        'Everything a lab makes is in namespaces named twl-<name>-... (switch sw, outside out, nodes nK,',
        'pods nK-pJ) and under /run/twill/lab/<name>/ (state.json, the lease store, agent logs, and each',
        'node\'s own run/flannel, var/lib/cni, etc/cni/net.d). The machine\'s root network namespace, its',
        '/run/flannel, /var/lib/cni and /etc/cni are never touched.',
        '',
        'Quick start:',
        '  sudo twill lab up && sudo twill lab check && sudo twill lab down',
      ].join('\n'),
    );

  lab
    .command('up')
    .description('build a lab: underlay switch, K nodes running twill agent, M pods per node attached by the CNI plugins')
    .addOption(nameOption())
    .addOption(new Option('--nodes <K>', 'number of nodes').argParser(parseCount('nodes', 1, 200)).default(3))
    .addOption(new Option('--pods-per-node <M>', 'pods on each node').argParser(parseCount('pods-per-node', 0, 100)).default(2))
    .addOption(new Option('--backend <TYPE>', 'flannel backend').choices(['vxlan', 'host-gw']).default('vxlan'))
    .addOption(new Option('--store <KIND>', 'lease store: local (SQLite file in the lab dir) or etcd (an etcd in its own namespace)').choices(['local', 'etcd']).default('local'))
    .addOption(new Option('--scenario <S>', 'extra: docker (a docker0 bridge and a container at 172.17.0.2 on every node)').choices(['docker']))
    .option('-q, --quiet', 'no progress lines on stderr')
    .action(async (opts: { name: string; nodes: number; podsPerNode: number; backend: 'vxlan' | 'host-gw'; store: 'local' | 'etcd'; scenario?: 'docker'; quiet?: boolean }) => {
      await guarded('up', async () => {
        const { labUp, labStatus } = await import('../lab/lab.js');
        const { progressPrinter } = await import('../lab/table.js');
        const { renderStatus } = await import('../lab/render.js');
        const say = progressPrinter(!opts.quiet);
        const state = await labUp({ name: opts.name, nodes: opts.nodes, podsPerNode: opts.podsPerNode, backend: opts.backend, store: opts.store, scenario: opts.scenario ?? null, progress: say });
        say('ready');
        process.stdout.write(`${renderStatus(state, labStatus(state))}\n`);
      });
    });

  lab
    .command('check')
    .description('connectivity matrix: pod↔pod (one node, across nodes), node↔pod, outside (masquerade), hostPort, path MTU, overlay counters; exit 1 on any failure')
    .addOption(nameOption())
    .option('--json', 'the rows as JSON')
    .option('-q, --quiet', 'no progress lines on stderr')
    .action(async (opts: { name: string; json?: boolean; quiet?: boolean }) => {
      await guarded('check', async () => {
        const { requireState } = await import('../lab/state.js');
        const { labCheck, renderCheck } = await import('../lab/check.js');
        const { progressPrinter } = await import('../lab/table.js');
        const state = requireState(opts.name);
        const report = await labCheck(state, progressPrinter(!opts.quiet && !opts.json));
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderCheck(state, report)}\n`);
        if (report.failures > 0) process.exitCode = 1;
      });
    });

  lab
    .command('status')
    .description('the lab\'s nodes (subnet, public IP) and pods (IP)')
    .addOption(nameOption())
    .option('--json', '{"nodes":[{"name","netns","subnet","publicIp"}],"pods":[{"name","node","netns","ip"}]}')
    .action(async (opts: { name: string; json?: boolean }) => {
      await guarded('status', async () => {
        const { requireState } = await import('../lab/state.js');
        const { labStatus } = await import('../lab/lab.js');
        const { renderStatus } = await import('../lab/render.js');
        const state = requireState(opts.name);
        const status = labStatus(state);
        process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : `${renderStatus(state, status)}\n`);
      });
    });

  lab
    .command('exec')
    .description('run a command inside a node (n1), a pod (n1-p1), or sw/out')
    .addOption(nameOption())
    .argument('<TARGET>', 'n1, n1-p1, sw, out, ...')
    .argument('<CMD...>', 'the command, after --')
    .action(async (target: string, cmd: string[], opts: { name: string }) => {
      await guarded('exec', async () => {
        const { requireState } = await import('../lab/state.js');
        const { labTargetNetns } = await import('../lab/lab.js');
        const state = requireState(opts.name);
        const netns = labTargetNetns(state, target);
        // A node's command sees the node's own /run/flannel, /var/lib/cni, as its agent does.
        const node = state.nodes.find((n) => n.name === target);
        const { nodeView } = await import('../lab/nodeview.js');
        const r = spawnSync('ip', ['netns', 'exec', netns, ...(node ? nodeView(node.dir) : []), ...cmd], { stdio: 'inherit' });
        if (r.error) throw new Error(`cannot run ${cmd[0]} in ${netns}: ${r.error.message}`);
        process.exitCode = r.status ?? 1;
      });
    });

  lab
    .command('explain')
    .description('run twill explain on a lab node: its namespaces, its subnet.env and host-local files, the lab\'s leases')
    .addOption(nameOption())
    .argument('<NODE>', 'n1, n2, ...')
    .option('--format <F>', 'text, json, svg or html', 'text')
    .option('--out <FILE>', 'write to FILE instead of stdout')
    .action(async (nodeName: string, opts: { name: string; format: string; out?: string }) => {
      await guarded('explain', async () => {
        const { requireState } = await import('../lab/state.js');
        const state = requireState(opts.name);
        const node = state.nodes.find((n) => n.name === nodeName);
        if (!node) throw new Error(`lab ${opts.name} has no node ${nodeName} (nodes: ${state.nodes.map((n) => n.name).join(', ')})`);
        // Inside the node's namespace, as an administrator on the node would run it: the node's
        // view is the current namespace, and an etcd on the lab's underlay is reachable from there.
        const self = process.argv[1] && process.argv[1] !== process.execPath ? [process.execPath, process.argv[1]] : [process.execPath];
        const args = [
          'netns', 'exec', node.netns, ...self, 'explain', '--format', opts.format, ...(opts.out ? ['--out', opts.out] : []),
          '--subnet-file', join(node.dir, 'run/flannel/subnet.env'), '--cni-data-dir', join(node.dir, 'var/lib/cni/networks'), '--store', state.storeSpec,
        ];
        const r = spawnSync('ip', args, { stdio: 'inherit' });
        if (r.error) throw new Error(`cannot run twill explain in ${node.netns}: ${r.error.message}`);
        process.exitCode = r.status ?? 1;
      });
    });

  lab
    .command('add-pod')
    .description('add a pod to a node, through the node\'s CNI chain')
    .addOption(nameOption())
    .argument('<NODE>', 'n1, n2, ...')
    .action(async (node: string, opts: { name: string }) => {
      await guarded('add-pod', async () => {
        const { labAddPod } = await import('../lab/lab.js');
        const pod = await labAddPod(opts.name, node);
        process.stdout.write(`${pod.name} ${pod.ip ?? '-'} ${pod.netns}\n`);
      });
    });

  lab
    .command('remove-pod')
    .description('remove a pod (CNI DEL, then its namespace)')
    .addOption(nameOption())
    .argument('<POD>', 'n1-p1, ...')
    .action(async (pod: string, opts: { name: string }) => {
      await guarded('remove-pod', async () => {
        const { labRemovePod } = await import('../lab/lab.js');
        await labRemovePod(opts.name, pod);
      });
    });

  lab
    .command('restart-agent')
    .description('stop a node\'s agent (SIGTERM) and start it again; the data plane stays up meanwhile')
    .addOption(nameOption())
    .argument('<NODE>', 'n1, n2, ...')
    .action(async (node: string, opts: { name: string }) => {
      await guarded('restart-agent', async () => {
        const { labRestartAgent } = await import('../lab/lab.js');
        const n = await labRestartAgent(opts.name, node);
        process.stdout.write(`${n.name}: agent pid ${n.agentPid}, subnet ${n.subnet}\n`);
      });
    });

  lab
    .command('remove-node')
    .description('a node leaves: its agent stops, its lease is deleted (the other nodes drop their routes to it), its namespaces go')
    .addOption(nameOption())
    .argument('<NODE>', 'n1, n2, ...')
    .action(async (node: string, opts: { name: string }) => {
      await guarded('remove-node', async () => {
        const { labRemoveNode } = await import('../lab/lab.js');
        await labRemoveNode(opts.name, node);
      });
    });

  lab
    .command('down')
    .description('remove every namespace, process and file of the lab (also after a crash or a half-finished up)')
    .addOption(nameOption())
    .option('-q, --quiet', 'no progress lines on stderr')
    .action(async (opts: { name: string; quiet?: boolean }) => {
      await guarded('down', async () => {
        const { labDown } = await import('../lab/lab.js');
        const { progressPrinter } = await import('../lab/table.js');
        const r = await labDown(opts.name, progressPrinter(!opts.quiet));
        const nothing = r.namespaces.length === 0 && r.processes.length === 0 && !r.dirRemoved;
        process.stdout.write(nothing ? `lab ${opts.name}: nothing to remove\n` : `lab ${opts.name}: removed ${r.namespaces.length} namespaces, ${r.processes.length} processes${r.dirRemoved ? ', its directory' : ''}\n`);
      });
    });
}
