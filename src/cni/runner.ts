// The plugin runner: environment + stdin → command → stdout, as the spec and
// libcni's skel define it. `invoke` is the whole protocol without a process,
// so a delegate that is twill's own runs in-process with the same semantics.
import { CniError, ErrorCode, invalidConfig } from './errors.js';
import { readCmdArgs, readCommand, validateNetworkName, type Env } from './env.js';
import { formatResult } from './result.js';
import { CURRENT_VERSION, DEFAULT_CONFIG_VERSION, atLeast } from './version.js';
import type { Plugin, PluginContext } from './plugin.js';
import type { NetConf } from './types.js';
import { readSync } from 'node:fs';
import { isatty } from 'node:tty';
import { flushTrace, mark } from './trace.js';

export type Outcome = { ok: true; output: Record<string, unknown> | null } | { ok: false; error: CniError; version?: string };

function parseConf(stdin: Buffer): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin.toString('utf8'));
  } catch (e) {
    throw new CniError(ErrorCode.DecodingFailure, `error decoding the network config on stdin: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CniError(ErrorCode.DecodingFailure, 'the network config on stdin must be a JSON object');
  }
  const conf = raw as NetConf;
  if (conf.cniVersion === undefined || conf.cniVersion === '') conf.cniVersion = DEFAULT_CONFIG_VERSION;
  if (typeof conf.cniVersion !== 'string') {
    throw new CniError(ErrorCode.DecodingFailure, `cniVersion must be a string such as "1.0.0", got ${JSON.stringify(conf.cniVersion)}`);
  }
  // Runtimes always send the type (it is how they found the plugin); without it the input is hand-made and wrong.
  if (typeof conf.type !== 'string' || conf.type === '') throw invalidConfig(`missing plugin "type" in the config (got ${JSON.stringify(conf.type)})`);
  return conf;
}

function parseValidAttachments(conf: NetConf): { containerId: string; ifname: string }[] {
  const list = conf['cni.dev/valid-attachments'];
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw invalidConfig('"cni.dev/valid-attachments" must be a list');
  return list.map((a: unknown, i) => {
    const o = a as { containerID?: unknown; ifname?: unknown };
    if (typeof o?.containerID !== 'string' || typeof o.ifname !== 'string') {
      throw invalidConfig(`"cni.dev/valid-attachments"[${i}] needs "containerID" and "ifname" strings`);
    }
    return { containerId: o.containerID, ifname: o.ifname };
  });
}

function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  return new CniError(ErrorCode.Internal, e instanceof Error ? e.message : String(e));
}

/**
 * One plugin invocation, without touching the process: for main(), in-process
 * delegation and the server. `ownExecutables`: see CmdArgs.
 */
export async function invoke(plugin: Plugin, env: Env, stdin: Buffer, ownExecutables?: readonly string[]): Promise<Outcome> {
  let version: string | undefined;
  try {
    const command = readCommand(env);
    if (command === null) throw new CniError(ErrorCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
    if (command === 'VERSION') return { ok: true, output: { cniVersion: CURRENT_VERSION, supportedVersions: [...plugin.versions] } };
    const cmd = readCmdArgs(command, env, stdin, ownExecutables);
    const conf = parseConf(stdin);
    version = conf.cniVersion;
    validateNetworkName(conf.name);
    if (!plugin.versions.includes(conf.cniVersion)) {
      throw new CniError(
        ErrorCode.IncompatibleVersion,
        `incompatible CNI versions: the config has cniVersion "${conf.cniVersion}", ${plugin.type} supports ${plugin.versions.join(', ')}`,
        `config is "${conf.cniVersion}", plugin supports ${JSON.stringify(plugin.versions)}`,
      );
    }
    const ctx: PluginContext = { conf, cmd, version: conf.cniVersion };
    switch (command) {
      case 'ADD':
        return { ok: true, output: formatResult(await plugin.add(ctx), conf.cniVersion) };
      case 'DEL':
        await plugin.del(ctx);
        return { ok: true, output: null };
      case 'CHECK':
        if (!atLeast(conf.cniVersion, '0.4.0')) throw new CniError(ErrorCode.IncompatibleVersion, `config version ${conf.cniVersion} does not allow CHECK (0.4.0 or later)`);
        await plugin.check(ctx);
        return { ok: true, output: null };
      case 'GC':
        if (!atLeast(conf.cniVersion, '1.1.0')) throw new CniError(ErrorCode.IncompatibleVersion, `config version ${conf.cniVersion} does not allow GC (1.1.0 or later)`);
        await plugin.gc?.({ ...ctx, validAttachments: parseValidAttachments(conf) });
        return { ok: true, output: null };
      case 'STATUS':
        if (!atLeast(conf.cniVersion, '1.1.0')) throw new CniError(ErrorCode.IncompatibleVersion, `config version ${conf.cniVersion} does not allow STATUS (1.1.0 or later)`);
        await plugin.status?.(ctx);
        return { ok: true, output: null };
    }
  } catch (e) {
    return version === undefined ? { ok: false, error: toCniError(e) } : { ok: false, error: toCniError(e), version };
  }
}

/** Go's json.MarshalIndent(v, "", "    "), which the reference plugins print. */
export const printJson = (v: unknown): string => JSON.stringify(v, null, 4);

/**
 * The config on fd 0, read with read(2): creating process.stdin (a net.Socket
 * for a pipe) and iterating it costs a plugin start several ms. A stdin that is
 * non-blocking (EAGAIN) is read as a stream instead.
 */
export async function readStdin(): Promise<Buffer> {
  if (isatty(0)) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(64 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EINTR') continue;
      if (code === 'EAGAIN') {
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        break;
      }
      if (code === 'EOF' || code === 'EBADF') break;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/**
 * The plugin as a process: exit 0 with the result on stdout, or 1 with the
 * error JSON. `stdin`: the config when the caller has read it already.
 */
export async function pluginMain(plugin: Plugin, about: string, stdin?: Buffer): Promise<number> {
  if (!process.env.CNI_COMMAND) {
    // Run by hand: say what this is, as the reference plugins do.
    process.stderr.write(`${about}\nCNI protocol versions supported: ${plugin.versions.join(', ')}\n`);
    return 0;
  }
  if (stdin === undefined) {
    stdin = process.env.CNI_COMMAND === 'VERSION' ? Buffer.alloc(0) : await readStdin();
    mark('stdin');
  }
  const outcome = await invoke(plugin, process.env, stdin);
  mark('done');
  flushTrace();
  const { code, stdout } = renderOutcome(outcome);
  process.stdout.write(stdout);
  return code;
}

/** What a plugin process prints and its exit status: the result (or nothing) and 0, or the error JSON and 1. */
export function renderOutcome(outcome: Outcome): { code: number; stdout: string } {
  if (outcome.ok) return { code: 0, stdout: outcome.output ? printJson(outcome.output) : '' };
  return { code: 1, stdout: printJson(outcome.error.toJSON(outcome.version)) };
}
