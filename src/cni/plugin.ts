import type { CmdArgs, CniResult, NetConf } from './types.js';

/** What a plugin's command sees: the config (raw and typed), the environment, the spec version. */
export interface PluginContext {
  conf: NetConf;
  cmd: CmdArgs;
  /** The config's cniVersion (the result goes back in it). */
  version: string;
}

export interface GcContext extends PluginContext {
  /** cni.dev/valid-attachments: what the runtime still uses. */
  validAttachments: { containerId: string; ifname: string }[];
}

/** A CNI plugin: one object per plugin type, its commands as methods. */
export interface Plugin {
  /** The plugin type ("bridge", "host-local", ...). */
  readonly type: string;
  /** Spec versions it accepts in a config. */
  readonly versions: readonly string[];
  add(ctx: PluginContext): Promise<CniResult>;
  del(ctx: PluginContext): Promise<void>;
  check(ctx: PluginContext): Promise<void>;
  gc?(ctx: GcContext): Promise<void>;
  status?(ctx: PluginContext): Promise<void>;
}
