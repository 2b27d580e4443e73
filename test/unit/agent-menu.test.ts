/** The agent's menu state machine, key decoder and renderer, as tables. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  KeyDecoder,
  choiceForKey,
  initMenu,
  menuKey,
  menuTick,
  renderFailure,
  renderCountdown,
  renderMenu,
  resumeMenu,
  type Key,
  type MenuState,
} from '../../src/agent/menu.js';

const ITEMS = [
  { id: 'deb', name: 'Debian 12' },
  { id: 'ubu', name: 'Ubuntu 24.04' },
  { id: 'win', name: 'Windows (qemu)' },
];
const UP: Key = { kind: 'up' };
const DOWN: Key = { kind: 'down' };
const ENTER: Key = { kind: 'enter' };
const ch = (c: string): Key => ({ kind: 'char', ch: c });

type Step = Key | 'tick';
function run(state: MenuState, steps: Step[]): MenuState {
  return steps.reduce((s, st) => (st === 'tick' ? menuTick(s) : menuKey(s, st)), state);
}

test('menu: initial state from default and timeout', () => {
  const cases: [string | null, number, number, number | null, string | undefined][] = [
    // default, timeout -> selected, countdown, action boot id
    ['ubu', 5, 1, 5, undefined],
    ['ubu', 0, 1, null, 'ubu'],
    ['ubu', -1, 1, null, undefined],
    [null, -1, 0, null, undefined],
    ['win', 2.5, 2, 3, undefined],
  ];
  for (const [def, timeout, selected, countdown, boot] of cases) {
    const s = initMenu(ITEMS, def, timeout);
    const label = `default ${def} timeout ${timeout}`;
    assert.equal(s.selected, selected, label);
    assert.equal(s.countdown, countdown, label);
    assert.deepEqual(s.action, boot === undefined ? undefined : { kind: 'boot', id: boot }, label);
  }
});

test('menu: keys and ticks, as a table', () => {
  const cases: {
    name: string;
    def: string | null;
    timeout: number;
    steps: Step[];
    action: unknown;
    selected?: number;
    countdown?: number | null;
  }[] = [
    {
      name: 'countdown reaches the default',
      def: 'ubu',
      timeout: 3,
      steps: ['tick', 'tick', 'tick'],
      action: { kind: 'boot', id: 'ubu' },
    },
    {
      name: 'countdown not yet over',
      def: 'ubu',
      timeout: 3,
      steps: ['tick', 'tick'],
      action: undefined,
      countdown: 1,
    },
    {
      name: 'any key stops the countdown',
      def: 'ubu',
      timeout: 3,
      steps: [ch('x'), 'tick', 'tick', 'tick', 'tick'],
      action: undefined,
      countdown: null,
    },
    {
      name: 'arrow stops the countdown and moves',
      def: 'ubu',
      timeout: 3,
      steps: [DOWN, 'tick', 'tick', 'tick'],
      action: undefined,
      selected: 2,
    },
    {
      name: 'down then enter boots the next',
      def: 'deb',
      timeout: 10,
      steps: [DOWN, ENTER],
      action: { kind: 'boot', id: 'ubu' },
    },
    {
      name: 'up wraps to the last',
      def: 'deb',
      timeout: -1,
      steps: [UP, ENTER],
      action: { kind: 'boot', id: 'win' },
    },
    {
      name: 'down wraps to the first',
      def: 'win',
      timeout: -1,
      steps: [DOWN, ENTER],
      action: { kind: 'boot', id: 'deb' },
    },
    {
      name: 'negative timeout waits forever',
      def: 'deb',
      timeout: -1,
      steps: Array<Step>(100).fill('tick'),
      action: undefined,
      countdown: null,
    },
    { name: 's opens a shell', def: 'deb', timeout: 5, steps: [ch('s')], action: { kind: 'shell' } },
    { name: 'r reloads the menu', def: 'deb', timeout: 5, steps: [ch('r')], action: { kind: 'reload' } },
    { name: 'q quits', def: 'deb', timeout: -1, steps: [ch('q')], action: { kind: 'quit' } },
    {
      name: 'keys after a decision change nothing',
      def: 'deb',
      timeout: -1,
      steps: [ENTER, DOWN, ch('s')],
      action: { kind: 'boot', id: 'deb' },
      selected: 0,
    },
    {
      name: 'enter boots the default at once',
      def: 'win',
      timeout: 30,
      steps: [ENTER],
      action: { kind: 'boot', id: 'win' },
    },
  ];
  for (const c of cases) {
    const s = run(initMenu(ITEMS, c.def, c.timeout), c.steps);
    assert.deepEqual(s.action, c.action, c.name);
    if (c.selected !== undefined) assert.equal(s.selected, c.selected, c.name);
    if (c.countdown !== undefined) assert.equal(s.countdown, c.countdown, c.name);
  }
});

test('menu: an empty list only offers the shell; resume drops the countdown and the decision', () => {
  const empty = initMenu([], null, -1);
  assert.equal(menuKey(empty, ENTER).action, undefined);
  assert.deepEqual(menuKey(empty, ch('s')).action, { kind: 'shell' });
  const shell = run(initMenu(ITEMS, 'ubu', 5), [DOWN, ch('s')]);
  const back = resumeMenu(shell);
  assert.equal(back.action, undefined);
  assert.equal(back.countdown, null);
  assert.equal(back.selected, 2, 'the cursor stays where it was');
  assert.equal(run(back, ['tick', 'tick', 'tick', 'tick', 'tick', 'tick']).action, undefined);
});

test('keys: arrows in both encodings, Enter as CR, LF or CR LF, split sequences', () => {
  const cases: [string[], Key[]][] = [
    [['\x1b[A\x1b[B'], [UP, DOWN]],
    [['\x1bOA\x1bOB'], [UP, DOWN]],
    [['\r'], [ENTER]],
    [['\n'], [ENTER]],
    [['\r\n'], [ENTER]],
    [['\r\r'], [ENTER, ENTER]],
    [
      ['\x1b', '[B', '\r'],
      [DOWN, ENTER],
    ],
    [['\x1b[', 'A'], [UP]],
    [['s'], [ch('s')]],
    [['\x1b[C'], [{ kind: 'other' }]],
    [['\x1b[1;5A'], [UP]],
    [['\x1bx'], [{ kind: 'other' }, ch('x')]],
  ];
  for (const [chunks, keys] of cases) {
    const d = new KeyDecoder();
    const got = chunks.flatMap((c) => d.push(c));
    assert.deepEqual(got, keys, JSON.stringify(chunks));
  }
  const d = new KeyDecoder();
  assert.deepEqual(d.push(Buffer.from('\x1b[B\r')), [DOWN, ENTER], 'bytes as well as strings');
});

test('choices: r, m, s, q (either case) and nothing else', () => {
  assert.equal(choiceForKey(ch('r')), 'retry');
  assert.equal(choiceForKey(ch('M')), 'menu');
  assert.equal(choiceForKey(ch('s')), 'shell');
  assert.equal(choiceForKey(ch('q')), 'quit');
  assert.equal(choiceForKey(ch('x')), undefined);
  assert.equal(choiceForKey(ENTER), undefined);
  assert.equal(choiceForKey(UP), undefined);
});

test('render: names, the selection, the default and the countdown in plain ANSI', () => {
  const header = { mac: '52:54:00:12:34:56', server: 'http://10.0.0.1:8080', quitLabel: 'power off' };
  const text = renderMenu(initMenu(ITEMS, 'ubu', 7), header);
  for (const it of ITEMS) assert.ok(text.includes(it.name), it.name);
  assert.match(text, /Booting Ubuntu 24\.04 in 7 s/);
  assert.match(text, /> Ubuntu 24\.04 \(default\)/);
  assert.ok(text.includes('52:54:00:12:34:56') && text.includes('http://10.0.0.1:8080'));
  assert.match(text, /s shell/);
  assert.match(text, /q power off/);
  // Only CSI sequences: clear, home, SGR (no curses, no cursor addressing beyond home).
  const afterEsc = text.split('\x1b').slice(1);
  assert.ok(afterEsc.length > 0);
  for (const s of afterEsc) assert.match(s, /^\[(2J|H|[0-9;]*m)/, JSON.stringify(s.slice(0, 8)));
  // A tick rewrites only the countdown line, in place.
  const ticked = menuTick(initMenu(ITEMS, 'ubu', 7));
  assert.equal(
    renderCountdown(ticked),
    '\r\x1b[KBooting Ubuntu 24.04 in 6 s; press any key to stop the countdown.',
  );
  assert.equal(renderCountdown(menuKey(ticked, ch('x'))), '\r\x1b[K', 'a stopped countdown erases its line');
  const stopped = renderMenu(menuKey(initMenu(ITEMS, 'ubu', 7), DOWN), header);
  assert.doesNotMatch(stopped, /Booting/);
  assert.match(stopped, /> Windows \(qemu\)/);
  assert.match(renderMenu(initMenu([], null, -1), header), /offers no OS/);
  const fail = renderFailure(
    { what: 'download of Debian 12', error: 'stalled', hint: 'the seeder' },
    'power off',
  );
  assert.match(fail, /FAILED: download of Debian 12/);
  assert.match(fail, /Check: the seeder/);
  assert.match(fail, /r to retry, m for the menu, s for a shell, q to power off/);
});
