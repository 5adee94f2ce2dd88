// The runtime's environment, read and checked before a plugin changes anything.
import { CniError, ErrorCode, invalidConfig, invalidEnv } from './errors.js';
import { parseCniArgs } from './args.js';
import type { CmdArgs, Command } from './types.js';

export const CNI_COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'];

const REQUIRED: Record<Command, string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  GC: ['CNI_PATH'],
  STATUS: ['CNI_PATH'],
  VERSION: [],
};

/** The spec's alphabet for container IDs and network names. */
const NAME_CHARS = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAME_MAX = 15;

export function validateContainerId(id: string): void {
  if (id === '') throw new CniError(ErrorCode.UnknownContainer, 'missing container ID (CNI_CONTAINERID)');
  if (!NAME_CHARS.test(id)) {
    throw invalidEnv(`invalid characters in container ID ${JSON.stringify(id)}: letters, digits, "_", "." and "-" only, starting with a letter or digit`, id);
  }
}

export function validateNetworkName(name: unknown): void {
  if (name === undefined || name === '') throw invalidConfig('missing network name ("name" in the config)');
  if (typeof name !== 'string' || !NAME_CHARS.test(name)) {
    throw invalidConfig(`invalid characters found in network name ${JSON.stringify(name)}: letters, digits, "_", "." and "-" only`, String(name));
  }
}

export function validateIfname(ifname: string): void {
  if (ifname === '') throw invalidEnv('interface name (CNI_IFNAME) is empty');
  if (ifname.length > IFNAME_MAX) throw invalidEnv(`interface name ${JSON.stringify(ifname)} is too long: at most ${IFNAME_MAX} characters`, ifname);
  if (ifname === '.' || ifname === '..') throw invalidEnv(`interface name ${JSON.stringify(ifname)} is not allowed`, ifname);
  if (/[/:\s]/.test(ifname)) throw invalidEnv(`interface name ${JSON.stringify(ifname)} contains "/", ":" or white space`, ifname);
}

export type Env = Record<string, string | undefined>;

/** CNI_COMMAND, or null when there is none (a person ran the binary by hand). */
export function readCommand(env: Env): Command | null {
  const cmd = env.CNI_COMMAND;
  if (!cmd) return null;
  if (!(CNI_COMMANDS as readonly string[]).includes(cmd)) {
    throw invalidEnv(`unknown CNI_COMMAND ${JSON.stringify(cmd)}: one of ${CNI_COMMANDS.join(', ')}`);
  }
  return cmd as Command;
}

export function readCmdArgs(command: Command, env: Env, stdin: Buffer, ownExecutables?: readonly string[]): CmdArgs {
  const missing = REQUIRED[command].filter((k) => !env[k]);
  if (missing.length) throw invalidEnv(`required env variables [${missing.join(',')}] missing`);
  const cmd: CmdArgs = {
    command,
    containerId: env.CNI_CONTAINERID ?? '',
    netns: env.CNI_NETNS ?? '',
    ifname: env.CNI_IFNAME ?? '',
    args: parseCniArgs(env.CNI_ARGS ?? ''),
    argsRaw: env.CNI_ARGS ?? '',
    path: (env.CNI_PATH ?? '').split(':').filter(Boolean),
    stdin,
    ...(ownExecutables ? { ownExecutables } : {}),
  };
  if (command === 'ADD' || command === 'DEL' || command === 'CHECK') {
    validateContainerId(cmd.containerId);
    validateIfname(cmd.ifname);
    if (cmd.netns && !cmd.netns.startsWith('/')) {
      throw new CniError(ErrorCode.InvalidNetns, `CNI_NETNS ${JSON.stringify(cmd.netns)} is not an absolute path`, cmd.netns);
    }
  }
  return cmd;
}
