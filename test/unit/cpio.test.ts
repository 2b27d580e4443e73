// Our newc writer checked by GNU cpio, an independent reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { encodeCpio } from '../../src/phase1/cpio.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

test('GNU cpio lists and extracts what we write', (t) => {
  const cpio = requireProgram('cpio', 'cpio');
  const data = pseudoRandomBytes(1001, 4);
  const archive = encodeCpio([
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/tool', data, mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'tool' },
    { type: 'dir', path: 'dev' },
    { type: 'char', path: 'dev/console', major: 5, minor: 1 },
    { type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
  ]);
  const list = execFileSync(cpio, ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
  assert.match(list, /^drwxr-xr-x .* bin$/m);
  assert.match(list, /^-rwxr-xr-x .* 1001 .* bin\/tool$/m);
  assert.match(list, /^lrwxrwxrwx .* bin\/sh -> tool$/m);
  assert.match(list, /^crw------- .* 5, +1 .* dev\/console$/m);
  const dir = tempDir(t);
  // Extraction of device nodes needs root and is not the point here.
  execFileSync(cpio, ['-id', '--quiet', '--no-absolute-filenames', 'bin/*', 'init'], {
    input: archive,
    cwd: dir,
  });
  assert.deepEqual(readFileSync(join(dir, 'bin', 'tool')), data);
  assert.equal(readlinkSync(join(dir, 'bin', 'sh')), 'tool');
  assert.throws(() => encodeCpio([{ type: 'dir', path: '../x' }]), /unsafe path/);
});
