/**
 * Runs inside the benchmark's server namespace: our HTTP server (the
 * image mounted under /img/) and our TFTP server over the same folder.
 *
 *   node dist/bench/swarm-serve.js --host 10.77.0.1 --root DIR --http-port 8080 --tftp-port 69
 *
 * Prints "ready" once both listen; SIGTERM closes both.
 */
import { parseArgs } from 'node:util';
import { BootHttpServer } from '../src/http/server.js';
import { TftpServer } from '../src/tftp/server.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    root: { type: 'string' },
    'http-port': { type: 'string', default: '8080' },
    'tftp-port': { type: 'string', default: '69' },
  },
});
if (!values.root) throw new Error('--root is required');
const http = new BootHttpServer(
  { host: values.host, port: Number(values['http-port']), mounts: { '/img/': values.root } },
  // No machine boots from this server: only the mounted image is served.
  { policy: { phaseOneFor: () => ({ refused: 'benchmark server' }), bootConfigFor: () => undefined } },
);
const tftp = new TftpServer({ host: values.host, port: Number(values['tftp-port']), root: values.root });
await http.listen();
await tftp.listen();
process.stdout.write('ready\n');
const stop = () => {
  void Promise.allSettled([http.close(), tftp.close()]).then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
