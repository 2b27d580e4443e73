/**
 * The boot menu as a pure state machine (STYLE.md lesson 7): state + key or
 * tick -> new state, and a renderer to plain ANSI text that a serial
 * console shows as well as a VGA one (no curses, no terminfo in phase 1).
 * Also the key decoder that turns console bytes into keys.
 */

export type Key =
  | { readonly kind: 'up' }
  | { readonly kind: 'down' }
  | { readonly kind: 'enter' }
  | { readonly kind: 'char'; readonly ch: string }
  | { readonly kind: 'other' };

/**
 * Turns console bytes into keys. Arrow keys arrive as ESC [ A / ESC [ B
 * (ANSI cursor keys) or ESC O A / ESC O B (the same keys in application
 * cursor mode, ECMA-48 SS3); a sequence may be split across reads, so an
 * unfinished one is kept for the next chunk.
 */
export class KeyDecoder {
  private pending = '';
  private lastWasCr = false;

  push(chunk: string | Uint8Array): Key[] {
    const text = this.pending + (typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('latin1'));
    this.pending = '';
    const keys: Key[] = [];
    let i = 0;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '\x1b') {
        if (i + 1 >= text.length) {
          this.pending = text.slice(i);
          break;
        }
        const intro = text[i + 1]!;
        if (intro === '[' || intro === 'O') {
          // CSI: parameter bytes 0x30-0x3f, then one final byte 0x40-0x7e.
          let j = i + 2;
          while (j < text.length && /[0-9;?]/.test(text[j]!)) j++;
          if (j >= text.length) {
            this.pending = text.slice(i);
            break;
          }
          const final = text[j]!;
          keys.push(final === 'A' ? { kind: 'up' } : final === 'B' ? { kind: 'down' } : { kind: 'other' });
          i = j + 1;
        } else {
          keys.push({ kind: 'other' });
          i += 1;
        }
        this.lastWasCr = false;
        continue;
      }
      if (c === '\n' && this.lastWasCr) {
        // CR LF from a terminal that sends both: one Enter.
        this.lastWasCr = false;
        i++;
        continue;
      }
      this.lastWasCr = c === '\r';
      if (c === '\r' || c === '\n') keys.push({ kind: 'enter' });
      else keys.push({ kind: 'char', ch: c });
      i++;
    }
    return keys;
  }
}

export interface MenuItem {
  readonly id: string;
  readonly name: string;
}

/** What the menu decided; undefined while the user is still choosing. */
export type MenuAction =
  | { readonly kind: 'boot'; readonly id: string }
  | { readonly kind: 'shell' }
  | { readonly kind: 'reload' }
  | { readonly kind: 'quit' };

export interface MenuState {
  readonly items: readonly MenuItem[];
  readonly selected: number;
  /** Seconds left before the default boots; null when there is no countdown (stopped or none). */
  readonly countdown: number | null;
  readonly defaultIndex: number;
  readonly action: MenuAction | undefined;
}

/**
 * The menu as the config gives it. timeout 0 boots the default at once,
 * a negative timeout (or no default) waits for a choice.
 */
export function initMenu(items: readonly MenuItem[], defaultId: string | null, timeout: number): MenuState {
  const found = defaultId === null ? -1 : items.findIndex((it) => it.id === defaultId);
  const defaultIndex = found;
  const base = { items, selected: Math.max(0, found), defaultIndex, action: undefined };
  if (found < 0 || timeout < 0) return { ...base, countdown: null };
  if (timeout === 0) return { ...base, countdown: null, action: { kind: 'boot', id: items[found]!.id } };
  return { ...base, countdown: Math.ceil(timeout) };
}

/** The same menu, back from a shell or a failure: no countdown, nothing decided. */
export function resumeMenu(state: MenuState): MenuState {
  return { ...state, countdown: null, action: undefined };
}

/** One second passed. */
export function menuTick(state: MenuState): MenuState {
  if (state.action !== undefined || state.countdown === null) return state;
  const left = state.countdown - 1;
  if (left > 0) return { ...state, countdown: left };
  const def = state.items[state.defaultIndex];
  if (!def) return { ...state, countdown: null };
  return { ...state, countdown: 0, selected: state.defaultIndex, action: { kind: 'boot', id: def.id } };
}

/** A key was pressed: any key stops the countdown, then it acts. */
export function menuKey(state: MenuState, key: Key): MenuState {
  if (state.action !== undefined) return state;
  const s: MenuState = { ...state, countdown: null };
  const n = s.items.length;
  switch (key.kind) {
    case 'up':
      return n === 0 ? s : { ...s, selected: (s.selected - 1 + n) % n };
    case 'down':
      return n === 0 ? s : { ...s, selected: (s.selected + 1) % n };
    case 'enter': {
      const it = s.items[s.selected];
      return it ? { ...s, action: { kind: 'boot', id: it.id } } : s;
    }
    case 'char':
      if (key.ch === 's' || key.ch === 'S') return { ...s, action: { kind: 'shell' } };
      if (key.ch === 'r' || key.ch === 'R') return { ...s, action: { kind: 'reload' } };
      if (key.ch === 'q' || key.ch === 'Q') return { ...s, action: { kind: 'quit' } };
      return s;
    default:
      return s;
  }
}

/** What a key means on a choice screen (failure, or after an OS ran). */
export type Choice = 'retry' | 'menu' | 'shell' | 'quit';

export function choiceForKey(key: Key): Choice | undefined {
  if (key.kind !== 'char') return undefined;
  switch (key.ch.toLowerCase()) {
    case 'r':
      return 'retry';
    case 'm':
      return 'menu';
    case 's':
      return 'shell';
    case 'q':
      return 'quit';
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------
// Rendering: plain ANSI (ECMA-48): clear screen, home, SGR reverse video.

export const CLEAR = '\x1b[2J\x1b[H';
const REVERSE = '\x1b[7m';
const BOLD = '\x1b[1m';
const RESET = '\x1b[0m';

export interface MenuHeader {
  readonly mac: string;
  /** The machine's name in the environment, when the config gives one. */
  readonly name?: string;
  readonly server: string;
  /** What `q` does here: power off (phase 1) or quit (host mode). */
  readonly quitLabel: string;
}

export function renderMenu(state: MenuState, header: MenuHeader): string {
  // The name is the server's (signed config), shown escaped like any text from the network.
  const who = header.name ? `${escapeName(header.name)} (${header.mac})` : header.mac;
  const lines: string[] = [`${BOLD}BootTorrent${RESET}  ${who}  server ${header.server}`, ''];
  if (state.items.length === 0) {
    lines.push('  The server offers no OS to this machine.');
  } else {
    lines.push('Choose the system to boot:', '');
    state.items.forEach((it, i) => {
      const mark = i === state.defaultIndex ? ' (default)' : '';
      lines.push(i === state.selected ? `${REVERSE} > ${it.name}${mark} ${RESET}` : `   ${it.name}${mark}`);
    });
  }
  lines.push('', `Up/Down choose, Enter boots, s shell, r reload the menu, q ${header.quitLabel}`, '');
  // The countdown is the last line, left open, so a tick rewrites only it.
  return `${CLEAR}${lines.join('\r\n')}${countdownText(state)}`;
}

function countdownText(state: MenuState): string {
  const def = state.items[state.defaultIndex];
  if (state.countdown === null || !def) return '';
  return `Booting ${def.name} in ${state.countdown} s; press any key to stop the countdown.`;
}

/**
 * What a tick changes on screen: the countdown line, rewritten in place
 * (CR, erase line), so a serial log gets one short line per second, not
 * one menu.
 */
export function renderCountdown(state: MenuState): string {
  return `\r\x1b[K${countdownText(state)}`;
}

export interface FailureInfo {
  /** What failed, e.g. "download of Debian 12". */
  readonly what: string;
  /** The error, one or more lines. */
  readonly error: string;
  /** What to check. */
  readonly hint: string;
}

export function renderFailure(f: FailureInfo, quitLabel: string): string {
  return [
    '',
    `${BOLD}BootTorrent: FAILED: ${f.what}${RESET}`,
    `  ${f.error.split('\n').join('\r\n  ')}`,
    `  Check: ${f.hint}`,
    '',
    `Press r to retry, m for the menu, s for a shell, q to ${quitLabel}.`,
    '',
  ].join('\r\n');
}

/** Letters, digits and - _ . only: a name is the environment's, but it reached us over the network. */
function escapeName(n: string): string {
  return n.replace(/[^A-Za-z0-9_.-]/g, '?').slice(0, 64);
}
