import { readFileSync } from 'node:fs';

// Set by scripts/bundle.mjs (esbuild `define`): a bundle or SEA has no package.json beside it.
declare const TWILL_VERSION: string | undefined;

function packageVersion(): string {
  if (typeof TWILL_VERSION === 'string') return TWILL_VERSION;
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function buildProgram() {
  const { Command } = await import('commander');
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
  await program.parseAsync(argv);
}
