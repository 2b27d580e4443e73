/**
 * The screen a framebuffer guest gets (#18 item 1, hostile review): QEMU run
 * with exactly the args the agent builds, on this machine's loopback. A
 * program in the guest reaches the client's loopback through QEMU's user
 * network (10.0.2.2), so the VNC server must not let in a client that does
 * not know the password (RFB security type 2, VNC authentication, is the
 * only one offered; a wrong answer is refused), and QEMU's monitor, which a
 * VNC console would put one key away, is off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { qemuCommand } from '../../src/agent/steps.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd, stopSync } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { childEnded } from '../helpers/wait.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');

/** Reads exactly n bytes from the socket (or fails when it closes first). */
function reader(sock: Socket) {
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let ended = false;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  let failure = '';
  sock.on('error', (e) => (failure = e.message));
  sock.on('close', () => {
    ended = true;
    wake?.();
  });
  return async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (ended) throw new Error(failure || `connection closed after ${buf.length} of ${n} bytes`);
      await new Promise<void>((r) => (wake = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
}

/** VNC authentication's answer: the challenge DES-encrypted with the password, each key byte bit-reversed. */
function vncResponse(challenge: Buffer, password: string): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let i = 0; i < 8; i++) {
    let b = key[i]!;
    let r = 0;
    for (let j = 0; j < 8; j++) r |= ((b >> j) & 1) << (7 - j);
    key[i] = r;
    b = r;
  }
  // Single DES is not in OpenSSL 3's default provider; triple DES with one key
  // three times is single DES (a unit check below pins a known vector).
  const des = createCipheriv('des-ede3', Buffer.concat([key, key, key]), null).setAutoPadding(false);
  return Buffer.concat([des.update(challenge), des.final()]);
}

/** Handshake up to the security result; returns the offered types and the result (0 = ok). */
async function tryVnc(port: number, password: string): Promise<{ types: number[]; result: number }> {
  const sock = connect({ host: '127.0.0.1', port });
  try {
    const read = reader(sock);
    const version = (await read(12)).toString('latin1');
    assert.match(version, /^RFB 003\.00[38]\n$/);
    sock.write('RFB 003.008\n');
    const n = (await read(1))[0]!;
    const types = [...(await read(n))];
    if (!types.includes(2)) return { types, result: -1 };
    sock.write(Buffer.from([2]));
    const challenge = await read(16);
    sock.write(vncResponse(challenge, password));
    return { types, result: (await read(4)).readUInt32BE(0) };
  } finally {
    sock.destroy();
  }
}

test('a framebuffer guest screen: VNC on loopback only behind the password, no monitor', async (t) => {
  // FIPS 81's example, through the bit reversal: the key bytes below reverse to 0123456789abcdef.
  const rev = Buffer.from(
    [...Buffer.from('0123456789abcdef', 'hex')].map((b) => {
      let r = 0;
      for (let j = 0; j < 8; j++) r |= ((b >> j) & 1) << (7 - j);
      return r;
    }),
  );
  assert.equal(
    vncResponse(Buffer.from('Now is tNow is t', 'latin1'), rev.toString('latin1')).toString('hex'),
    '3fa40e8a984d48153fa40e8a984d4815',
  );
  const dir = tempDir(t, 'bt-vnc-');
  const password = 'Xy7_k-2Q';
  const display = 37;
  const c = qemuCommand(
    ['-machine', 'pc', '-m', '16', '-accel', 'tcg', '-S', '-nodefaults', '-vga', 'std'],
    dir,
    false,
    'framebuffer',
    {
      display,
      password,
    },
  );
  const child = spawn(qemu, [...c.args], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const forget = onProcessEnd(() => stopSync(child.pid, 'SIGKILL', 0));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await childEnded(child);
    }
    forget();
  });
  const port = 5900 + display;
  const deadline = Date.now() + 60_000;
  let first: { types: number[]; result: number } | undefined;
  while (!first) {
    try {
      first = await tryVnc(port, 'wrong');
    } catch (e) {
      if (child.exitCode !== null) assert.fail(`qemu ended: ${err}`);
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  assert.deepEqual(first.types, [2], 'VNC authentication is the only security type');
  assert.notEqual(first.result, 0, 'a wrong password is refused');
  const right = await tryVnc(port, password);
  assert.equal(right.result, 0, 'the password the viewer is given opens it');
  // Listening on loopback only: not on the machine's other addresses.
  const listen = await new Promise<string>((resolve) =>
    spawn('ss', ['-Hltn', `sport = :${port}`]).stdout.on('data', (d: Buffer) => resolve(d.toString())),
  );
  assert.match(listen, /127\.0\.0\.1:5937/);
  assert.doesNotMatch(listen, /0\.0\.0\.0:5937|\*:5937|\[::\]:5937/);
  assert.ok(c.args.includes('-monitor') && c.args[c.args.indexOf('-monitor') + 1] === 'none');
});
