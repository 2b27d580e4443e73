/** Environments: Boottorrent.yaml (v0 or v1) + oss/<name>/config.yaml -> one frozen Environment. */
export type {
  BinOs,
  BootMethod,
  DhcpMode,
  Environment,
  HostOverride,
  KexecOs,
  LogLevel,
  OsEntry,
  Problem,
  QemuOs,
} from './types.js';
export {
  ENV_FILE,
  EnvironmentError,
  formatProblem,
  inspectEnvironment,
  loadEnvironment,
  splitArgs,
  validate,
  type Inspection,
  type ValidateOptions,
} from './load.js';
export { initEnvironment, type InitOptions, type InitResult } from './init.js';
export { IPXE_FILES, type MachineOptions } from './machine.js';
