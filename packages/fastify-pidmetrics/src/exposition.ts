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

function escapeString (text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

function escapeLabelValue (value: string | number): string {
  return typeof value === 'string' ? escapeString(value).replace(/"/g, '\\"') : String(value)
}

function formatLabels (labels: Labels): string {
  const parts: string[] = []
  for (const [name, value] of Object.entries(labels)) parts.push(`${name}="${escapeLabelValue(value)}"`)
  return parts.length > 0 ? `{${parts.join(',')}}` : ''
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
