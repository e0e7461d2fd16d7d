import assert from 'node:assert/strict';

/** One parsed series. */
export interface ParsedSample {
  readonly labels: Record<string, string>;
  readonly value: number;
  /** Histogram series: `_bucket`, `_sum` or `_count`. */
  readonly suffix?: string;
}

/** One parsed family. */
export interface ParsedFamily {
  readonly type: string;
  readonly help: string;
  readonly samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const match = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,?)/.exec(rest);
    assert.ok(match, `malformed labels: ${text}`);
    const [whole, name, raw] = match as unknown as [string, string, string];
    assert.equal(labels[name], undefined, `label ${name} repeated`);
    labels[name] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    rest = rest.slice(whole.length);
  }
  return labels;
}

/**
 * A strict parser of the Prometheus text format (0.0.4), enough to check l4proxy's output:
 * HELP and TYPE once per family and before its samples, valid names, no duplicate series.
 */
export function parseExposition(text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>();
  const seen = new Set<string>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    // Blank lines are allowed (prom-client separates families with one).
    if (line === '') continue;
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      const [, name, description] = help as unknown as [string, string, string];
      assert.ok(!families.has(name), `HELP of ${name} repeated`);
      families.set(name, { type: '', help: description, samples: [] });
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      const family = families.get(name);
      assert.ok(family && family.type === '', `TYPE of ${name} without HELP or repeated`);
      families.set(name, { ...family, type: kind });
      continue;
    }
    const sample = /^([^{\s]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(sample, `malformed line: ${line}`);
    const [, name, labelText, value] = sample as unknown as [
      string,
      string,
      string | undefined,
      string,
    ];
    assert.match(name, NAME);
    const histogram = /^(.*)(_bucket|_sum|_count)$/.exec(name);
    const base = histogram?.[1];
    const suffix = histogram?.[2];
    const ofHistogram =
      base !== undefined && suffix !== undefined && families.get(base)?.type === 'histogram';
    const family = families.get(ofHistogram ? base : name);
    assert.ok(family && family.type !== '', `sample of ${name} before its TYPE`);
    assert.ok(family.type !== 'histogram' || ofHistogram, `histogram ${name} without a suffix`);
    const labels = parseLabels(labelText ?? '');
    if (suffix === '_bucket' && ofHistogram)
      assert.ok(labels.le !== undefined, `${name} without le`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `duplicate series ${key}`);
    seen.add(key);
    family.samples.push({
      labels,
      value: Number(value),
      ...(ofHistogram && { suffix }),
    });
  }
  return families;
}

/** The value of the series of `name` whose labels are exactly `labels`. */
export function valueOf(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = families.get(name);
  const want = JSON.stringify(Object.entries(labels).sort());
  return family?.samples.find((s) => JSON.stringify(Object.entries(s.labels).sort()) === want)
    ?.value;
}
