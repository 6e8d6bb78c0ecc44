import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'

export interface Sample { labels: Record<string, string>, value: number }

/** Family name → TYPE, from a real exposition parser. */
export function familyTypes (text: string): Map<string, string> {
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f.type]))
}

/**
 * Every sample line, by its own name (`x_bucket`, `x_sum`...), labels intact. parse-prometheus-text-format
 * folds labelled histograms into one unlabelled entry, so the TYPE lines are dropped first and each
 * sample name parses as its own untyped family; the sample lines themselves go through the real parser.
 */
export function samples (text: string): Map<string, Sample[]> {
  const untyped = text.split('\n').filter((l) => !l.startsWith('# TYPE ')).join('\n')
  const out = new Map<string, Sample[]>()
  for (const fam of parsePrometheusTextFormat(untyped.endsWith('\n') ? untyped : untyped + '\n')) {
    const list = out.get(fam.name) ?? []
    for (const m of fam.metrics) list.push({ labels: m.labels ?? {}, value: Number(m.value) })
    out.set(fam.name, list)
  }
  return out
}

export function sumOf (list: Sample[] | undefined, where: (labels: Record<string, string>) => boolean = () => true): number {
  return (list ?? []).filter((s) => where(s.labels)).reduce((a, s) => a + s.value, 0)
}

export const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p))
export const PROMETHEUS = ['/usr/bin/prometheus', '/usr/local/bin/prometheus'].find((p) => existsSync(p))

/** `promtool check metrics` on exposition text: returns its complaints ('' when clean). */
export function promtoolCheckMetrics (text: string): { status: number | null, output: string } {
  if (PROMTOOL === undefined) throw new Error('promtool missing')
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, output: (r.stdout ?? '') + (r.stderr ?? '') }
}
