#!/usr/bin/env node
// Architecture report for a source tree (issue #15 "how it is checked"):
// `npm run arch`, or `node scripts/arch-report.js [dir]` (default src/).
// 1. Arrows between top-level folders (a top-level file is a folder of its
// own), with type-only imports counted; arrows up the layering below and
// import cycles between modules are flagged with the imports behind them.
// 2. The largest files and named functions/methods, by lines.
// The TypeScript parser reads the imports, so comments, strings and `import
// type` are told apart; only relative specifiers are followed. Exit code 0.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join, relative, dirname, resolve, sep } from 'node:path';
import ts from 'typescript';

// Bottom to top. A module may import its own level or below; a folder that is
// not listed is reported as unlayered.
const LAYERS = [
  ['errors', 'util', 'limits', 'version'],
  ['bencode', 'torrent', 'wire'],
  ['tracker', 'swarm'],
  ['boot', 'boot-config', 'dhcp', 'tftp', 'http', 'env', 'phase1', 'wol'],
  // The dashboard mounts on its own port and reads snapshots; it never imports server/.
  ['dashboard'],
  ['server'],
  ['agent', 'demo'],
  ['cli'],
];
const level = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i])));
const TOP = 15;

const root = resolve(process.argv[2] ?? new URL('../src', import.meta.url).pathname);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) files.push(p);
  }
})(root);

const rel = (p) => relative(root, p).split(sep).join('/');
const folderOf = (p) => rel(p).split('/')[0].replace(/\.ts$/, '');
const lineOf = (sf, pos) => sf.getLineAndCharacterOfPosition(pos).line + 1;

// './x.js' names the compiled file; the source is x.ts, or x/index.ts.
function resolveImport(from, spec) {
  if (!spec.startsWith('.')) return undefined;
  const base = resolve(dirname(from), spec).replace(/\.(js|ts)$/, '');
  return [`${base}.ts`, join(base, 'index.ts')].find((c) => existsSync(c));
}

const edges = []; // { from, to, typeOnly, line }
const sizes = []; // { file, lines }
const funcs = []; // { name, file, line, lines }

function functionName(node) {
  const n = node.name && ts.isIdentifier(node.name) ? node.name.text : node.name?.getText();
  if (ts.isFunctionDeclaration(node)) return n ?? 'default';
  if (ts.isConstructorDeclaration(node)) return `${node.parent.name?.text ?? '(class)'}.constructor`;
  if (ts.isMethodDeclaration(node) || ts.isGetAccessor(node) || ts.isSetAccessor(node)) {
    const owner = ts.isClassLike(node.parent) ? node.parent.name?.text : undefined;
    return owner ? `${owner}.${n}` : n;
  }
  // An arrow or function expression counts when it is given a name: a
  // variable, a property or a class field. Anonymous callbacks stay part of
  // the function that holds them.
  const p = node.parent;
  if (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p)) return p.name.getText();
  if (ts.isPropertyDeclaration(p)) return `${p.parent.name?.text ?? '(class)'}.${p.name.getText()}`;
  return undefined;
}

for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  sizes.push({ file: rel(file), lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) });
  const addEdge = (spec, typeOnly, node) => {
    const to = resolveImport(file, spec);
    if (to) edges.push({ from: file, to, typeOnly, line: lineOf(sf, node.getStart()) });
  };
  const visit = (node) => {
    // Only `import type` and `export type` are type-only: under
    // verbatimModuleSyntax `import { type A }` still loads the module.
    const spec = node.moduleSpecifier;
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && spec && ts.isStringLiteral(spec)) {
      addEdge(spec.text, !!(node.importClause ?? node).isTypeOnly, node);
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] &&
      ts.isStringLiteral(node.arguments[0])
    ) {
      addEdge(node.arguments[0].text, false, node);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      addEdge(node.argument.literal.text, true, node); // import('./x.js').T in a type
    }
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const name = functionName(node);
      if (name) {
        const line = lineOf(sf, node.getStart());
        funcs.push({ name, file: rel(file), line, lines: lineOf(sf, node.getEnd()) - line + 1 });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
}

// 1. Folder arrows.
const arrows = new Map();
for (const e of edges) {
  const a = folderOf(e.from);
  const b = folderOf(e.to);
  if (a === b) continue;
  const key = `${a} -> ${b}`;
  const arrow = arrows.get(key) ?? { a, b, count: 0, value: 0, sites: [] };
  arrow.count++;
  if (!e.typeOnly) arrow.value++;
  arrow.sites.push(`${rel(e.from)}:${e.line} -> ${rel(e.to)}${e.typeOnly ? ' (type)' : ''}`);
  arrows.set(key, arrow);
}
const shown = relative(process.cwd(), root);
console.log(`# Import arrows between top-level folders of ${shown.startsWith('..') ? root : shown || '.'}`);
console.log(`# layering, bottom to top: ${LAYERS.map((l) => l.join('/')).join(' -> ')}`);
console.log('# one line per importing folder, top layer first: target imports (how many of them type-only)');
const upward = [];
const unlayered = new Set();
const rank = (f) => level.get(f) ?? LAYERS.length;
const byFolder = new Map();
for (const x of arrows.values()) byFolder.set(x.a, [...(byFolder.get(x.a) ?? []), x]);
for (const a of [...byFolder.keys()].sort((x, y) => rank(y) - rank(x) || x.localeCompare(y))) {
  const parts = byFolder
    .get(a)
    .sort((x, y) => x.b.localeCompare(y.b))
    .map((x) => {
      for (const f of [x.a, x.b]) if (!level.has(f)) unlayered.add(f);
      const up = level.has(x.a) && level.has(x.b) && level.get(x.b) > level.get(x.a);
      if (up) upward.push(x);
      const kind = x.value === 0 ? ' type-only' : x.value < x.count ? ` (${x.count - x.value} type)` : '';
      return `${x.b} ${x.count}${kind}${up ? ' UPWARD' : ''}`;
    });
  console.log(`  ${a} -> ${parts.join(', ')}`);
}
console.log(`upward arrows: ${upward.length} (${upward.reduce((n, x) => n + x.count, 0)} imports)`);
for (const x of upward) for (const s of x.sites) console.log(`  UPWARD ${s}`);
if (unlayered.size > 0) console.log(`unlayered folders: ${[...unlayered].sort().join(', ')}`);

// Cycles between modules: strongly connected components (Tarjan) of the
// module graph, with one concrete loop shown per component. A cycle made only
// through type imports does not run, but still ties the modules together.
function components(useEdge) {
  const next = new Map(files.map((f) => [f, []]));
  for (const e of edges) if (useEdge(e)) next.get(e.from)?.push(e.to);
  const index = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const out = [];
  let i = 0;
  const connect = (v) => {
    index.set(v, i);
    low.set(v, i++);
    stack.push(v);
    on.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) connect(w);
      if (on.has(w)) low.set(v, Math.min(low.get(v), low.get(w)));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc = stack.splice(stack.indexOf(v));
    for (const w of scc) on.delete(w);
    if (scc.length > 1 || next.get(v).includes(v)) out.push({ scc, next });
  };
  for (const f of files) if (!index.has(f)) connect(f);
  return out;
}
function loop({ scc, next }) {
  const inside = new Set(scc);
  const start = [...scc].sort()[0];
  const prev = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const w of next.get(v)) {
      if (w === start) {
        const path = [start];
        for (let u = v; u !== start; u = prev.get(u)) path.splice(1, 0, u);
        return [...path, start].map(rel).join(' -> ');
      }
      if (!inside.has(w) || prev.has(w)) continue;
      prev.set(w, v);
      queue.push(w);
    }
  }
  return scc.map(rel).join(', ');
}
const runtime = components((e) => !e.typeOnly);
const all = components(() => true);
const runtimeFiles = new Set(runtime.flatMap((c) => c.scc));
console.log(`import cycles: ${all.length} (${runtime.length} through runtime imports alone)`);
for (const c of runtime) console.log(`  CYCLE ${loop(c)}`);
for (const c of all) if (!c.scc.every((f) => runtimeFiles.has(f))) console.log(`  CYCLE (types) ${loop(c)}`);

// 2. Largest files and functions.
console.log(`\n# ${TOP} largest files (lines), of ${sizes.length}`);
for (const s of sizes.sort((x, y) => y.lines - x.lines || x.file.localeCompare(y.file)).slice(0, TOP)) {
  console.log(`  ${String(s.lines).padStart(5)}  ${s.file}`);
}
console.log(`\n# ${TOP} largest functions and methods (lines), of ${funcs.length}`);
for (const f of funcs.sort((x, y) => y.lines - x.lines || x.file.localeCompare(y.file)).slice(0, TOP)) {
  console.log(`  ${String(f.lines).padStart(5)}  ${f.name}  ${f.file}:${f.line}`);
}
