import { readFileSync } from 'node:fs';
import { Command } from 'commander';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  return new Command('twill')
    .description(
      'A pod network for Kubernetes: every pod its own IP, across nodes, without NAT.\n' +
        'Drop-in for flannel (net-conf.json, subnet.env, etcd layout, VXLAN) and the CNI reference plugins.',
    )
    .version(packageVersion(), '-v, --version', 'print the version')
    .showHelpAfterError('(run "twill --help" for usage)')
    .addHelpText(
      'after',
      '\nSubcommands arrive with their issues: agent, cni, lab, explain (see README.md).\n' +
        'Everything twill does to the kernel needs root (CAP_NET_ADMIN).',
    );
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  if (argv.length <= 2) {
    program.outputHelp();
    return;
  }
  await program.parseAsync(argv);
}
