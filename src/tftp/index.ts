/** TFTP: pure codec, option negotiation, file providers and the read-only server. */
export * from './codec.js';
export { negotiateRead } from './options.js';
export type { Negotiated, NegotiationLimits } from './options.js';
export { cleanRequestPath, RootFileProvider } from './files.js';
export type { FileProvider, ServedFile, TftpClientAddress } from './files.js';
export { TftpServer } from './server.js';
export type {
  TftpServerOptions,
  TftpServerServices,
  TransferInfo,
  TransferResult,
  TftpServerEvents,
} from './server.js';
