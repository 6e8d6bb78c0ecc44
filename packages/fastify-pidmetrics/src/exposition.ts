import type { Family, Labels } from './merge.js'

/**
 * Prometheus text exposition (format 0.0.4), written here instead of with prom-client's Registry because
 * it runs in the cluster primary, whose budget over a bare node:cluster primary is a few MB
 * (bench/primary-rss.mjs): prom-client's registry and metric classes, its default-metric files and one
 * scrape cost the primary ~4 MB of RSS, the default metrics alone 1.4 MB. The output is what prom-client
 * 15's `Registry.metrics()` writes for the same families, byte for byte (escaping, number formatting,
 * blank line between families, trailing newline): test/exposition.test.ts compares the two.
 */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

// A scrape runs every few seconds for the life of the primary: what it allocates decides how far V8
// grows the primary's young generation, so the common case (nothing to escape) allocates nothing.
const NEEDS_ESCAPE = /[\\\n"]/

function escapeString (text: string): string {
  return NEEDS_ESCAPE.test(text) ? text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n') : text
}

function escapeLabelValue (value: string | number): string {
  if (typeof value !== 'string') return String(value)
  return NEEDS_ESCAPE.test(value) ? escapeString(value).replace(/"/g, '\\"') : value
}

function formatLabels (labels: Labels): string {
  let out = ''
  for (const name in labels) out += `${out === '' ? '{' : ','}${name}="${escapeLabelValue(labels[name] as string | number)}"`
  return out === '' ? '' : out + '}'
}

/** prom-client's `getValueAsString`: `Nan` (sic), `+Inf`, `-Inf`, else the number as JavaScript prints it. */
export function formatValue (value: number): string {
  if (Number.isNaN(value)) return 'Nan'
  if (!Number.isFinite(value)) return value < 0 ? '-Inf' : '+Inf'
  return String(value)
}

/** Families as exposition text; families without samples are left out (no HELP/TYPE without a series). */
export function formatFamilies (families: readonly Family[]): string {
  const blocks: string[] = []
  for (const family of families) {
    if (family.values.length === 0) continue
    const name = escapeString(family.name)
    const lines = [`# HELP ${name} ${escapeString(family.help)}`, `# TYPE ${name} ${family.type}`]
    for (const sample of family.values) {
      lines.push(`${sample.metricName ?? name}${formatLabels(sample.labels ?? {})} ${formatValue(sample.value)}`)
    }
    blocks.push(lines.join('\n'))
  }
  return blocks.join('\n\n') + '\n'
}
