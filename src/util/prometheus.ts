/**
 * The Prometheus text exposition format, version 0.0.4: for each family a
 * `# HELP` and a `# TYPE` line, then one `name{label="value"} value` line
 * per series. Pure and strict: a metric or label name the format does not
 * allow, a counter whose name does not end in `_total`, or a family or
 * series given twice is the caller's bug and throws, so a scrape never gets
 * text Prometheus would refuse. Label values and HELP text are escaped as
 * the format says (backslash, double quote in labels, line feed).
 */

/** What GET /metrics answers with (the format's own media type). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type MetricType = 'counter' | 'gauge';

export interface MetricSample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly samples: readonly MetricSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the format quotes it: backslash, double quote and line feed escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** HELP text: backslash and line feed escaped (a quote stays as it is). */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

/** A sample value: Go's float syntax, which JavaScript's number text is, and +Inf, -Inf, NaN. */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

/** The families in the text format, in the order given; throws on anything the format does not allow. */
export function renderMetrics(families: readonly MetricFamily[]): string {
  const names = new Set<string>();
  const out: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw new Error(`metric name ${JSON.stringify(f.name)} is not valid`);
    if (names.has(f.name)) throw new Error(`metric ${f.name} is given twice`);
    names.add(f.name);
    if (f.type === 'counter' && !f.name.endsWith('_total'))
      throw new Error(`counter ${f.name} must end in _total`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    const series = new Set<string>();
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      for (const [k] of labels)
        if (!LABEL_NAME.test(k) || k.startsWith('__'))
          throw new Error(`label name ${JSON.stringify(k)} of ${f.name} is not valid`);
      const text =
        labels.length === 0 ? '' : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
      const key = labels
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .sort()
        .join(',');
      if (series.has(key)) throw new Error(`series ${f.name}{${key}} is given twice`);
      series.add(key);
      out.push(`${f.name}${text} ${formatValue(s.value)}`);
    }
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}
