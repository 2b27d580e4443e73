/**
 * The agent test server as a program, for tests that run it inside a
 * network namespace: `node agent-server-main.js HOST ROOT MARKER` serves one
 * `bin` OS whose program prints MARKER, and prints `READY <server URL>`.
 * It runs until killed (the test kills it by PID).
 */
import { pseudoRandomBytes } from './tmp.js';
import { startFixture } from './agent-fixture.js';

const [host, root, marker] = process.argv.slice(2);
if (!host || !root || !marker) throw new Error('usage: agent-server-main.js HOST ROOT MARKER');
const fx = await startFixture(
  { after: () => undefined },
  {
    host,
    root,
    lsd: true,
    oss: [
      {
        id: 'netos',
        name: 'Net OS',
        method: 'bin',
        bin: 'run.sh',
        args: [],
        files: { 'run.sh': `#!/bin/sh\necho "${marker}"\n`, 'blob.bin': pseudoRandomBytes(2 << 20, 5) },
      },
    ],
    default: 'netos',
    timeout: 0,
  },
);
process.stdout.write(`READY ${fx.server}\n`);
setInterval(() => {
  for (const r of fx.reports.splice(0)) process.stdout.write(`REPORT ${r.token} ${JSON.stringify(r.body)}\n`);
}, 200);
