/**
 * Hostile paths against the two file servers (issue #8): TFTP and the HTTP
 * mounts serve only their roots. Every request spelling that could climb out
 * (dot segments, percent-encoded and double-encoded dots, encoded slashes,
 * backslashes, NUL, absolute paths, symlinks to files and folders outside,
 * symlink chains, prefix confusion on the mount) must be refused, and the
 * secret beside the root must never appear in a reply. The control cases
 * prove the server decodes exactly once: a file literally named `%2e%2e`
 * inside the root is served for `%252e%252e`.
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TftpServer } from '../../src/tftp/server.js';
import { BootHttpServer, type HttpBootPolicy } from '../../src/http/server.js';
import { tempDir } from '../helpers/tmp.js';

const SECRET = 'TOP-SECRET-outside-the-root';
const HOST = '127.0.0.1';

/** root/ with ok.txt, a file named %2e%2e, sub/, and symlinks out; secret beside root. */
function layout(t: TestContext): { dir: string; root: string } {
  const dir = tempDir(t, 'bt-sec-');
  const root = join(dir, 'root');
  mkdirSync(join(root, 'sub'), { recursive: true });
  mkdirSync(join(dir, 'outside'));
  writeFileSync(join(dir, 'secret'), SECRET);
  writeFileSync(join(dir, 'outside', 'secret'), SECRET);
  writeFileSync(join(root, 'ok.txt'), 'ok');
  writeFileSync(join(root, '%2e%2e'), 'literal name');
  writeFileSync(join(root, 'sub', 'inner.txt'), 'inner');
  symlinkSync(join(dir, 'secret'), join(root, 'file-link'));
  symlinkSync(join(dir, 'outside'), join(root, 'dir-link'));
  symlinkSync('../secret', join(root, 'relative-link'));
  // A chain: inside -> inside -> outside.
  symlinkSync('file-link', join(root, 'chain-1'));
  symlinkSync('chain-1', join(root, 'chain-2'));
  symlinkSync('../ok.txt', join(root, 'sub', 'up-but-inside'));
  return { dir, root };
}

// ---------------------------------------------------------------- TFTP

interface TftpReply {
  data?: Buffer;
  error?: { code: number; message: string };
  silent?: true;
}

/** A bare RRQ client: the request bytes as given, plain 512-byte blocks. */
function tftpRaw(port: number, request: Buffer): Promise<TftpReply> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const done = (r: TftpReply): void => {
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => done({ silent: true }), 800);
    };
    sock.on('error', reject);
    sock.on('message', (msg, rinfo) => {
      const op = msg.readUInt16BE(0);
      if (op === 5)
        return done({
          error: { code: msg.readUInt16BE(2), message: msg.subarray(4).toString().replace(/\0.*$/s, '') },
        });
      if (op !== 3) return done({ error: { code: -1, message: `opcode ${op}` } });
      chunks.push(msg.subarray(4));
      const ack = Buffer.alloc(4);
      ack.writeUInt16BE(4, 0);
      ack.writeUInt16BE(msg.readUInt16BE(2), 2);
      // The last ACK must be out before the socket closes: a lost one has the
      // server resend that block, to a port a later request may be given.
      if (msg.length - 4 < 512) sock.send(ack, rinfo.port, HOST, () => done({ data: Buffer.concat(chunks) }));
      else {
        sock.send(ack, rinfo.port, HOST);
        arm();
      }
    });
    sock.bind(0, HOST, () => {
      arm();
      sock.send(request, port, HOST);
    });
  });
}

function rrq(name: string | Buffer, mode = 'octet'): Buffer {
  return Buffer.concat([Buffer.of(0, 1), Buffer.from(name), Buffer.of(0), Buffer.from(mode), Buffer.of(0)]);
}

test('TFTP serves only its root: traversal, encodings, backslashes, NUL, absolute paths and symlinks out are refused', async (t) => {
  const { root } = layout(t);
  const server = new TftpServer({ host: HOST, port: 0, root, timeoutMs: 200, retries: 2 }, {});
  const { port } = await server.listen();
  t.after(() => server.close());

  assert.equal((await tftpRaw(port, rrq('ok.txt'))).data?.toString(), 'ok');
  assert.equal(
    (await tftpRaw(port, rrq('sub/up-but-inside'))).data?.toString(),
    'ok',
    'a link that stays inside is fine',
  );
  // TFTP names are not URLs: "%2e%2e" is a file name like any other.
  assert.equal((await tftpRaw(port, rrq('%2e%2e'))).data?.toString(), 'literal name');

  const hostile: (string | Buffer)[] = [
    '../secret',
    '../../../../../../etc/passwd',
    '/../secret',
    '/etc/passwd',
    '//etc/passwd',
    'sub/../../secret',
    'sub/./../../secret',
    './../secret',
    '%2e%2e/secret',
    '%252e%252e/secret',
    '..%2fsecret',
    '..\\secret',
    '\\..\\secret',
    'sub\\..\\..\\secret',
    'C:\\secret',
    '..',
    '.',
    '',
    'sub',
    'file-link',
    'relative-link',
    'dir-link/secret',
    'chain-2',
    Buffer.from([0xc0, 0xae, 0xc0, 0xae, 0x2f, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74]), // overlong UTF-8 ".."
    'x'.repeat(400),
  ];
  for (const name of hostile) {
    const r = await tftpRaw(port, rrq(name));
    const label = JSON.stringify(name.toString());
    assert.equal(r.data, undefined, `${label} must not be served`);
    assert.ok(r.error || r.silent, label);
    assert.doesNotMatch(r.error?.message ?? '', /TOP-SECRET/, label);
  }
  // NUL ends the name on the wire: what follows is the mode, never part of a path.
  for (const raw of [
    Buffer.concat([Buffer.of(0, 1), Buffer.from('ok.txt\0../secret\0octet\0')]),
    Buffer.concat([Buffer.of(0, 1), Buffer.from('../secret\0\0octet\0')]),
    Buffer.concat([Buffer.of(0, 1), Buffer.from('../secret')]),
  ]) {
    const r = await tftpRaw(port, raw);
    assert.notEqual(r.data?.toString(), SECRET, JSON.stringify(raw.toString()));
    assert.equal(r.data, undefined, JSON.stringify(raw.toString()));
  }
});

// ---------------------------------------------------------------- HTTP

/** One raw request line, so no client library normalises the target first. */
function httpRaw(port: number, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, HOST);
    const chunks: Buffer[] = [];
    sock.on('error', reject);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    sock.write(`GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, 'latin1');
  });
}

test('HTTP mounts serve only their roots: dot segments, single and double encoding, backslashes, NUL, symlinks out, prefix confusion', async (t) => {
  const { dir, root } = layout(t);
  writeFileSync(join(dir, 'root-sibling'), SECRET);
  const policy: HttpBootPolicy = { phaseOneFor: () => ({ refused: 'no' }), bootConfigFor: () => undefined };
  const server = new BootHttpServer({ host: HOST, port: 0, mounts: { '/files/': root } }, { policy });
  const port = await server.listen();
  t.after(() => server.close());

  const ok = await httpRaw(port, '/files/ok.txt');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'ok');
  assert.equal((await httpRaw(port, '/files/sub/up-but-inside')).body, 'ok');
  // Decoded exactly once: %252e%252e is the file literally named "%2e%2e".
  const literal = await httpRaw(port, '/files/%252e%252e');
  assert.equal(literal.status, 200);
  assert.equal(literal.body, 'literal name');

  const hostile = [
    '/files/../secret',
    '/files/../../../../etc/passwd',
    '/files/%2e%2e/secret',
    '/files/%2E%2E/secret',
    '/files/.%2e/secret',
    '/files/%2e./secret',
    '/files/%252e%252e/secret',
    '/files/%252e%252e%252fsecret',
    '/files/..%2fsecret',
    '/files/..%252fsecret',
    '/files/sub/..%2f..%2fsecret',
    '/files/..\\secret',
    '/files/..%5csecret',
    '/files/%5c..%5csecret',
    '/files/sub%5c..%5c..%5csecret',
    '/files/%00',
    '/files/ok.txt%00',
    '/files/..%00/secret',
    '/files//etc/passwd',
    '/files/%2fetc%2fpasswd',
    '/files/%c0%ae%c0%ae/secret',
    '/files/file-link',
    '/files/relative-link',
    '/files/dir-link/secret',
    '/files/chain-2',
    '/files/sub',
    '/files/',
    '/files',
    '/files../root-sibling',
    '/files/../root-sibling',
    '/filesroot-sibling',
    '../secret',
    'secret',
    '*',
    `http://${HOST}:${port}/files/../secret`,
    `http://${HOST}:${port}/files/%2e%2e/secret`,
  ];
  for (const target of hostile) {
    const r = await httpRaw(port, target);
    assert.ok(r.status >= 400 && r.status < 500, `${target}: status ${r.status}`);
    assert.doesNotMatch(r.body, /TOP-SECRET|root:x:0/, target);
  }
});
