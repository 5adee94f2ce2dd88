/** Error codes of the CNI spec (1.1.0 §"Error"); 100+ are twill's own. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  InvalidNetns: 8,
  TryAgainLater: 11,
  /** STATUS: the plugin cannot add containers now. */
  PluginNotAvailable: 50,
  /** STATUS: a limited connectivity state. */
  PluginLimited: 51,
  /** Any other failure (the kernel, the disk): libcni's ErrInternal, what the reference plugins report. */
  Internal: 999,
} as const;

export interface CniErrorJson {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

/** An error reported to the runtime as JSON on stdout (exit 1). */
export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details = '') {
    super(msg);
    this.name = 'CniError';
  }

  toJSON(cniVersion?: string): CniErrorJson {
    const out: CniErrorJson = cniVersion ? { cniVersion, code: this.code, msg: this.message } : { code: this.code, msg: this.message };
    if (this.details) out.details = this.details;
    return out;
  }
}

export const invalidConfig = (msg: string, details = '') => new CniError(ErrorCode.InvalidNetworkConfig, msg, details);
export const invalidEnv = (msg: string, details = '') => new CniError(ErrorCode.InvalidEnvironment, msg, details);
