/**
 * Runs inside bench:campus's server namespace: our DHCP server in full mode
 * with the relayed subnets (the same DhcpServer `start` runs). No boot
 * information is offered: the campus benchmark's clients are agents that
 * take an address through the router's relay, then join the swarm.
 *
 *   node dist/bench/campus-dhcp.js '<DhcpServerOptions as JSON>'
 *
 * Prints "ready" once it listens and "lease <mac> <ip>" per lease; SIGTERM closes it.
 */
import { DhcpServer, type DhcpServerOptions } from '../src/dhcp/server.js';
import { streamLogger } from '../src/util/logger.js';

const options = JSON.parse(process.argv[2] ?? '{}') as DhcpServerOptions;
const server = new DhcpServer(options, { logger: streamLogger(process.stderr, { level: 'warn' }) });
server.on('lease', (l) => process.stdout.write(`lease ${l.mac} ${l.ip}\n`));
await server.listen();
process.stdout.write('ready\n');
const stop = () => {
  void server.close().finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
