// Where the agent's own dependencies come from in the single executable. They stay
// out of the bundle (scripts/bundle.mjs, AGENT_ONLY_DEPENDENCIES: native or large,
// and never needed by a CNI plugin), so a checkout's bundle requires them from its
// node_modules. A single executable cannot: its `require` loads built-in modules
// only. It loads them from disk instead, from the directory the image installs
// them in beside it (scripts/build-image.sh): /usr/bin/twill → /usr/lib/twill/node_modules.
// scripts/bundle.mjs routes every import of those packages through here in the SEA.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The directory whose node_modules holds the agent's dependencies, for an executable at execPath. */
export function agentModulesRoot(execPath = process.execPath): string {
  return join(dirname(execPath), '..', 'lib', 'twill');
}

/** One of the agent's dependencies, required from agentModulesRoot(); the error says where it was looked for. */
export function requireAgentDependency(name: string): unknown {
  const root = agentModulesRoot();
  try {
    return createRequire(join(root, 'package.json'))(name);
  } catch (e) {
    // Only the package itself missing: a package of its own missing (or failing) is another story, told as it is.
    if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || !(e as Error).message.startsWith(`Cannot find module '${name}'`)) throw e;
    throw new Error(
      `the agent needs the package ${name}, which the single executable does not hold, and it is not in ${join(root, 'node_modules')}: ` +
        'use the image (scripts/build-image.sh installs the agent\'s packages there), or run the agent from a checkout (bin/twill agent)',
    );
  }
}
