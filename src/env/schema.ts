/**
 * Checks a parsed YAML document against the JSON Schema files in `schema/`
 * (the same files editors use, so there is one definition of the format).
 *
 * Why our own interpreter of a JSON Schema subset rather than a validator
 * library: we walk the YAML nodes, not the plain values, so every problem
 * carries the line and column of the exact key or value at fault, every
 * problem is reported (not the first), and the wording and the fix come from
 * the schema itself (`enum`, `minimum`, `x-fix`, ...). The subset is what our
 * schemas use: type, const, enum, minimum, maximum, minLength, pattern,
 * format ipv4, properties, required, additionalProperties, items, anyOf,
 * allOf, if/then (with `then.required`) and local `$ref`. A test checks that
 * the schema files use no other keyword.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, type LineCounter, type Node, type Pair } from 'yaml';

export interface JsonSchema {
  readonly type?: string | readonly string[];
  readonly const?: unknown;
  readonly enum?: readonly unknown[];
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly pattern?: string;
  readonly format?: string;
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean | JsonSchema;
  readonly items?: JsonSchema;
  readonly anyOf?: readonly JsonSchema[];
  readonly allOf?: readonly JsonSchema[];
  readonly if?: JsonSchema;
  readonly then?: JsonSchema;
  readonly $ref?: string;
  readonly $defs?: Readonly<Record<string, JsonSchema>>;
  readonly description?: string;
  readonly default?: unknown;
  readonly title?: string;
  readonly $schema?: string;
  readonly $id?: string;
  /** Our extension: the fix to print when `pattern` does not match. */
  readonly 'x-fix'?: string;
}

/** Keywords the interpreter understands; anything else in a schema file is a bug. */
export const SUPPORTED_KEYWORDS = new Set([
  'type',
  'const',
  'enum',
  'minimum',
  'maximum',
  'minLength',
  'pattern',
  'format',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'anyOf',
  'allOf',
  'if',
  'then',
  '$ref',
  '$defs',
  'description',
  'default',
  'title',
  '$schema',
  '$id',
  'x-fix',
]);

export type SchemaName = 'boottorrent.v0' | 'boottorrent.v1' | 'os.v0' | 'os.v1';

/** Folder of the schema files: the repository's `schema/` (this module runs from dist/src/env/). */
export const SCHEMA_DIR = new URL('../../../schema/', import.meta.url).pathname;

const cache = new Map<SchemaName, JsonSchema>();

export function loadSchema(name: SchemaName): JsonSchema {
  let s = cache.get(name);
  if (!s) {
    s = JSON.parse(readFileSync(`${SCHEMA_DIR}${name}.schema.json`, 'utf8')) as JsonSchema;
    cache.set(name, s);
  }
  return s;
}

/** A problem found by the schema walk, before the file name is attached. */
export interface NodeProblem {
  readonly line?: number;
  readonly column?: number;
  readonly field: string;
  readonly message: string;
  readonly fix: string;
}

export interface Checked {
  /** The plain value with every invalid part left out (undefined where the whole is invalid). */
  readonly value: unknown;
  readonly problems: NodeProblem[];
  /** What lenient mode accepted and left out or changed (unknown fields, quoted numbers). */
  readonly warnings: NodeProblem[];
  /** Position of each field's value, by dotted path, for later cross-checks. */
  readonly positions: ReadonlyMap<string, { line: number; column: number }>;
}

/** Prefer these in "did you mean": names from version 0 written in a version 1 file. */
const RENAMES: Readonly<Record<string, string>> = {
  dispname: 'name',
  enable: 'enabled',
  bt_enable_lpd: 'lsd',
  enable_peer_exchange: 'pex',
};

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export interface CheckOptions {
  /**
   * The older tool's files (version 0), as it accepted them: an unknown
   * field is ignored and a quoted number read as a number, each with a
   * warning instead of a problem. Version 1 stays strict.
   */
  readonly lenient?: boolean;
}

export function checkDocument(
  root: Node | null,
  schema: JsonSchema,
  lines: LineCounter,
  field = '',
  opts: CheckOptions = {},
): Checked {
  const problems: NodeProblem[] = [];
  const warnings: NodeProblem[] = [];
  const positions = new Map<string, { line: number; column: number }>();
  const posOf = (node: Node | null | undefined): { line: number; column: number } | undefined => {
    const start = node?.range?.[0];
    if (start === undefined) return undefined;
    const p = lines.linePos(start);
    return { line: p.line, column: p.col };
  };

  const resolve = (s: JsonSchema): JsonSchema => {
    if (!s.$ref) return s;
    const m = /^#\/\$defs\/(.+)$/.exec(s.$ref);
    const target = m ? schema.$defs?.[m[1]!] : undefined;
    if (!target) throw new Error(`schema: unresolvable $ref ${s.$ref}`);
    return target;
  };

  const INVALID = Symbol('invalid');

  function walk(
    node: Node | null,
    s0: JsonSchema,
    path: string,
    parent: Node | null,
    into: NodeProblem[],
  ): unknown {
    const s = resolve(s0);
    const pos = posOf(node);
    if (pos && path) positions.set(path, pos);
    const report = (message: string, fix: string) => {
      const p = pos ?? posOf(parent);
      into.push({ ...p, field: path || '(document)', message, fix });
    };

    if (s.anyOf) {
      const trials: NodeProblem[][] = [];
      for (const alt of s.anyOf) {
        const trial: NodeProblem[] = [];
        const v = walk(node, alt, path, parent, trial);
        if (trial.length === 0) return v;
        trials.push(trial);
      }
      // One alternative of the value's own type (a string of the wrong form):
      // its problems say more than "must be a string or a list".
      const actualType = nodeType(node);
      const sameType = s.anyOf.flatMap((a, i) => {
        const t = resolve(a).type;
        return (typeof t === 'string' ? [t] : (t ?? [])).includes(actualType) ? [i] : [];
      });
      if (sameType.length === 1) {
        into.push(...trials[sameType[0]!]!);
        return INVALID;
      }
      const kinds = s.anyOf.map((a) => describeType(resolve(a)));
      report(`must be ${kinds.join(' or ')}, not ${describeNode(node)}`, `write ${kinds.join(' or ')}`);
      return INVALID;
    }

    const actual = nodeType(node);
    const types = s.type === undefined ? undefined : typeof s.type === 'string' ? [s.type] : s.type;
    // Lenient (version 0): `port: "10001"` is the number PyYAML's users meant.
    let coerced: number | undefined;
    if (opts.lenient && actual === 'string' && isScalar(node) && types) {
      const text = String(node.value).trim();
      const fits =
        (types.includes('integer') && /^-?\d+$/.test(text)) ||
        (types.includes('number') && /^-?\d+(\.\d+)?$/.test(text));
      if (fits) {
        coerced = Number(text);
        warnings.push({
          ...(pos ?? posOf(parent)),
          field: path || '(document)',
          message: `quoted number ${JSON.stringify(node.value)} read as ${coerced}`,
          fix: `write ${coerced} without quotes`,
        });
      }
    }
    if (
      coerced === undefined &&
      types &&
      !types.some((t) => t === actual || (t === 'number' && actual === 'integer'))
    ) {
      const want = describeType(s);
      report(`must be ${want}, not ${describeNode(node)}`, `write ${want}`);
      return INVALID;
    }

    if (actual === 'object' && isMap(node)) {
      const obj: Record<string, unknown> = {};
      const known = Object.keys(s.properties ?? {});
      for (const pair of node.items as Pair<Node, Node | null>[]) {
        const keyNode = pair.key;
        const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
        const sub = path ? `${path}.${key}` : key;
        const propSchema = s.properties?.[key];
        const extra = s.additionalProperties;
        if (propSchema) {
          const v = walk(pair.value, propSchema, sub, keyNode, into);
          if (v !== INVALID) obj[key] = v;
        } else if (extra !== undefined && extra !== false && extra !== true) {
          const kp = posOf(keyNode);
          if (kp) positions.set(`${sub}#key`, kp);
          const v = walk(pair.value, extra, sub, keyNode, into);
          if (v !== INVALID) obj[key] = v;
        } else if (extra === false && opts.lenient && suggest(key, known) === undefined) {
          const kp = posOf(keyNode);
          warnings.push({
            ...kp,
            field: sub,
            message: `unknown field '${key}'${path ? ` in ${path}` : ''} is ignored (BootTorrent does not use it)`,
            fix: `remove it to silence this warning; read here: ${known.join(', ')}`,
          });
        } else if (extra === false) {
          const guess = suggest(key, known);
          const kp = posOf(keyNode);
          into.push({
            ...kp,
            field: sub,
            message: `unknown field '${key}'${path ? ` in ${path}` : ''}${guess ? ` (did you mean '${guess}'?)` : ''}`,
            fix: guess ? `rename it to '${guess}'` : `remove it; allowed here: ${known.join(', ')}`,
          });
        } else {
          obj[key] = pair.value?.toJSON() as unknown;
        }
      }
      const required = [...(s.required ?? [])];
      for (const cond of [s, ...(s.allOf ?? [])]) {
        if (cond.if && cond.then && matches(obj, cond.if)) required.push(...(cond.then.required ?? []));
      }
      for (const key of required) {
        if (!(key in obj) && !node.items.some((p) => isScalar(p.key) && String(p.key.value) === key)) {
          const where = cond(s, obj, key);
          into.push({
            ...(pos ?? posOf(parent)),
            field: path ? `${path}.${key}` : key,
            message: `missing required field '${key}'${path ? ` in ${path}` : ''}${where}`,
            fix: `add ${key}: ${exampleFor(s.properties?.[key] ? resolve(s.properties[key]) : {})}`,
          });
        }
      }
      return obj;
    }

    if (actual === 'array' && isSeq(node)) {
      const arr: unknown[] = [];
      node.items.forEach((item, i) => {
        const v: unknown = s.items
          ? walk(item as Node, s.items, `${path}[${i}]`, node, into)
          : ((item as Node).toJSON() as unknown);
        if (v !== INVALID) arr.push(v);
      });
      return arr;
    }

    const value: unknown = coerced ?? (isScalar(node) ? node.value : null);
    if (s.const !== undefined && value !== s.const) {
      report(
        `must be ${JSON.stringify(s.const)}, not ${describeNode(node)}`,
        `write ${JSON.stringify(s.const)}`,
      );
      return INVALID;
    }
    if (s.enum && !s.enum.includes(value)) {
      const guess = typeof value === 'string' ? suggest(value, s.enum.map(String)) : undefined;
      report(
        `${describeNode(node)} is not one of ${s.enum.join(', ')}${guess ? ` (did you mean '${guess}'?)` : ''}`,
        `use one of ${s.enum.join(' | ')}`,
      );
      return INVALID;
    }
    if (typeof value === 'number') {
      if ((s.minimum !== undefined && value < s.minimum) || (s.maximum !== undefined && value > s.maximum)) {
        const range =
          s.maximum === undefined
            ? `${s.minimum} or more`
            : `from ${s.minimum ?? '-infinity'} to ${s.maximum}`;
        report(`${value} is out of range`, `use a number ${range}`);
        return INVALID;
      }
    }
    if (typeof value === 'string') {
      if (s.minLength !== undefined && value.length < s.minLength) {
        report('must not be empty', 'write a value or remove the field');
        return INVALID;
      }
      if (s.format === 'ipv4' && !IPV4.test(value)) {
        report(`'${value}' is not a dotted IPv4 address`, 'write an address like 10.0.0.1');
        return INVALID;
      }
      if (s.pattern !== undefined && !new RegExp(s.pattern).test(value)) {
        report(`'${value}' has the wrong form`, s['x-fix'] ?? `match ${s.pattern}`);
        return INVALID;
      }
    }
    return value;
  }

  const value = walk(root, schema, field, null, problems);
  return { value: value === INVALID ? undefined : value, problems, warnings, positions };
}

/** Does the partial object satisfy an `if` made of `properties: {k: {const}}`? */
function matches(obj: Record<string, unknown>, s: JsonSchema): boolean {
  for (const [k, sub] of Object.entries(s.properties ?? {})) {
    if (sub.const !== undefined && obj[k] !== sub.const) return false;
  }
  return true;
}

function cond(s: JsonSchema, obj: Record<string, unknown>, key: string): string {
  for (const c of [s, ...(s.allOf ?? [])]) {
    if (c.if && c.then?.required?.includes(key) && matches(obj, c.if)) {
      const [k, sub] = Object.entries(c.if.properties ?? {})[0] ?? [];
      if (k && sub) return ` (needed when ${k} is ${String(sub.const)})`;
    }
  }
  return '';
}

function nodeType(node: Node | null): string {
  if (isMap(node)) return 'object';
  if (isSeq(node)) return 'array';
  if (!isScalar(node)) return node === null ? 'null' : 'unknown';
  const v = node.value;
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  if (typeof v === 'boolean') return 'boolean';
  if (typeof v === 'string') return 'string';
  return 'unknown';
}

function describeNode(node: Node | null): string {
  const t = nodeType(node);
  if (t === 'null') return 'empty';
  if (t === 'object') return 'a mapping';
  if (t === 'array') return 'a list';
  const v = isScalar(node) ? node.value : undefined;
  return `${typeof v === 'string' ? `'${v}'` : String(v)} (${t === 'integer' ? 'a number' : `a ${t}`})`;
}

function describeType(s: JsonSchema): string {
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return `one of ${s.enum.join(', ')}`;
  const types = s.type === undefined ? [] : typeof s.type === 'string' ? [s.type] : [...s.type];
  const words = types.map((t) => {
    switch (t) {
      case 'integer':
        return 'a whole number';
      case 'boolean':
        return 'true or false';
      case 'object':
        return 'a mapping';
      case 'array':
        return s.items ? `a list of ${describeType(s.items).replace(/^an? /, '')}s` : 'a list';
      case 'null':
        return 'empty';
      default:
        return `a ${t}`;
    }
  });
  return words.join(' or ') || 'a value';
}

function exampleFor(s: JsonSchema): string {
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map(String).join('|');
  if (s.format === 'ipv4') return '10.0.0.1';
  if (s.type === 'integer') return '0';
  if (s.type === 'boolean') return 'true';
  if (s.type === 'object') return '{...}';
  return '...';
}

/** Closest candidate by edit distance (at most a third of the word), or a known rename. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const renamed = RENAMES[word];
  if (renamed && candidates.includes(renamed) && renamed !== word) return renamed;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
