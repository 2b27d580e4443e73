/**
 * A strict reader of the Prometheus text exposition format 0.0.4, written
 * from the format's description (Prometheus docs, "Exposition formats"),
 * for tests: it reads back the values a scrape would store, and throws on
 * what Prometheus would refuse, plus what this project promises on top:
 *
 *   - lines are `# HELP name text`, `# TYPE name type`, other `#` comments,
 *     empty lines, or samples `name[{label="value",...}] value [timestamp]`;
 *   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 *     [a-zA-Z_][a-zA-Z0-9_]* and do not start with `__`;
 *   - label values are double-quoted with only \\, \" and \n escaped; HELP
 *     text with only \\ and \n;
 *   - values are Go floats, +Inf, -Inf or NaN; a timestamp is an integer;
 *   - at most one HELP and one TYPE per family, the TYPE before the
 *     family's first sample, and (stricter than the format, which allows
 *     untyped samples) every sample's family has a TYPE;
 *   - a family's lines form one group; no series (name and label set)
 *     appears twice, and no label twice in one sample.
 *
 * The real check is promtool's (test/interop/metrics-prometheus.test.ts);
 * this one gives the tests the values.
 */

export type FamilyType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface ParsedSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
  readonly timestamp?: number;
}

export interface ParsedFamily {
  readonly name: string;
  type: FamilyType | undefined;
  help: string | undefined;
  readonly samples: ParsedSample[];
}

export class ExpositionError extends Error {}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf|NaN)$/;
const TYPES = new Set<FamilyType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseFloatValue(text: string, line: number): number {
  if (!FLOAT.test(text)) throw new ExpositionError(`line ${line}: ${JSON.stringify(text)} is not a float`);
  if (/^[+]?[Ii]nf$/.test(text)) return Infinity;
  if (/^-[Ii]nf$/.test(text)) return -Infinity;
  if (/NaN$/.test(text)) return NaN;
  return Number(text);
}

/** HELP text: `\\` and `\n` are the only escapes; any other backslash stands for itself, as in the format. */
function unescapeHelp(text: string): string {
  return text.replace(/\\([\\n])/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
}

/** The family a sample name belongs to: its own, or a histogram's or summary's by suffix. */
function familyOf(name: string, families: Map<string, ParsedFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const t = families.get(base)?.type;
    if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base;
  }
  return name;
}

/** Reads `{a="x",b="y"}` at `text[i]`; returns the labels and the index after `}`. */
function readLabels(text: string, i: number, line: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  const fail = (why: string): never => {
    throw new ExpositionError(`line ${line}: ${why}`);
  };
  i++; // '{'
  for (;;) {
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] === '}') return [labels, i + 1];
    const m = LABEL_NAME.exec(text.slice(i));
    if (!m) fail(`label name expected at column ${i + 1}`);
    const name = m![0];
    if (name.startsWith('__')) fail(`label name ${name} is reserved`);
    if (Object.hasOwn(labels, name)) fail(`label ${name} given twice`);
    i += name.length;
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] !== '=') fail(`'=' expected after label ${name}`);
    i++;
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] !== '"') fail(`'"' expected to open the value of label ${name}`);
    i++;
    let value = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) fail(`value of label ${name} is not closed`);
      if (c === '"') break;
      if (c === '\\') {
        const e = text[i + 1];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else fail(`invalid escape \\${e ?? ''} in the value of label ${name}`);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    labels[name] = value;
    i++; // closing quote
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] === ',') {
      i++;
      continue;
    }
    if (text[i] !== '}') fail(`',' or '}' expected after the value of label ${name}`);
  }
}

/** Every family in `text`, in order of appearance; throws ExpositionError on the first fault. */
export function parseExposition(text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>();
  const series = new Set<string>();
  /** Families whose group has ended: a later line for one of them splits its group. */
  const closed = new Set<string>();
  let current: string | undefined;
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  else if (text !== '') throw new ExpositionError('the text does not end with a line feed');
  const enter = (name: string, line: number): ParsedFamily => {
    if (current !== name) {
      if (closed.has(name)) throw new ExpositionError(`line ${line}: family ${name} is not one group`);
      if (current !== undefined) closed.add(current);
      current = name;
    }
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: undefined, help: undefined, samples: [] }));
    return f;
  };
  lines.forEach((raw, index) => {
    const n = index + 1;
    const fail = (why: string): never => {
      throw new ExpositionError(`line ${n}: ${why}`);
    };
    const line = raw.replace(/^[ \t]+/, '');
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!) || METRIC_NAME.exec(name!)![0] !== name)
        fail(`${kind} names an invalid metric ${JSON.stringify(name)}`);
      const f = enter(name!, n);
      if (kind === 'HELP') {
        if (f.help !== undefined) fail(`second HELP for ${name}`);
        f.help = unescapeHelp(rest);
      } else {
        if (f.type !== undefined) fail(`second TYPE for ${name}`);
        if (f.samples.length > 0) fail(`TYPE for ${name} after its samples`);
        const type = rest.trim() as FamilyType;
        if (!TYPES.has(type)) fail(`unknown type ${JSON.stringify(rest)} for ${name}`);
        f.type = type;
      }
      return;
    }
    const m = METRIC_NAME.exec(line);
    if (!m) fail(`a metric name expected: ${JSON.stringify(raw)}`);
    const name = m![0];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === '{') [labels, i] = readLabels(line, i, n);
    const after = line.slice(i);
    if (after !== '' && !/^[ \t]/.test(after)) fail(`space expected after ${name}'s name or labels`);
    const fields = after.trim().split(/[ \t]+/);
    if (fields.length < 1 || fields[0] === '' || fields.length > 2)
      fail(`expected a value and an optional timestamp`);
    const value = parseFloatValue(fields[0]!, n);
    let timestamp: number | undefined;
    if (fields[1] !== undefined) {
      if (!/^-?\d+$/.test(fields[1])) fail(`timestamp ${JSON.stringify(fields[1])} is not an integer`);
      timestamp = Number(fields[1]);
    }
    const familyName = familyOf(name, families);
    const f = enter(familyName, n);
    if (f.type === undefined) fail(`sample of ${name} before any TYPE line for it`);
    if (f.type !== 'histogram' && f.type !== 'summary' && name !== familyName)
      fail(`sample ${name} in family ${familyName}`);
    const key = `${name}{${Object.keys(labels)
      .sort()
      .map((k) => `${k}=${JSON.stringify(labels[k])}`)
      .join(',')}}`;
    if (series.has(key)) fail(`series ${key} appears twice`);
    series.add(key);
    f.samples.push({ name, labels, value, ...(timestamp !== undefined ? { timestamp } : {}) });
  });
  return families;
}

/** The value of the one series of `name` with exactly `labels`; throws when there is none. */
export function sampleValue(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number {
  const f = families.get(name);
  const want = Object.entries(labels);
  const s = f?.samples.find(
    (x) => Object.keys(x.labels).length === want.length && want.every(([k, v]) => x.labels[k] === v),
  );
  if (!s) throw new Error(`no series ${name}${JSON.stringify(labels)}`);
  return s.value;
}
