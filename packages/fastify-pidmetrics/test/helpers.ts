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

/** `CI` set (and not "false"/"0"): the Prometheus tools are required, a missing one fails the run. */
export const IN_CI = !['', 'false', '0'].includes(process.env.CI ?? '')

/**
 * The `skip` option of a test that needs `name` at `path`: skipped on a developer machine without
 * it, never under CI, where the test runs and fails on {@link requireTool}.
 */
export function skipWithout (path: string | undefined, name: string): string | false {
  if (path !== undefined || IN_CI) return false
  return `${name} not found (install the Debian package "prometheus"); under CI=true this fails instead`
}

export function requireTool (path: string | undefined, name: string): string {
  if (path === undefined) throw new Error(`${name} not found in /usr/bin or /usr/local/bin: install the Debian package "prometheus" (CI requires it)`)
  return path
}

/** Whether to run the promtool lint inside a test: always under CI (failing if promtool is missing). */
export const LINT_WITH_PROMTOOL = PROMTOOL !== undefined || IN_CI

/** `promtool check metrics` on exposition text: returns its complaints ('' when clean). */
export function promtoolCheckMetrics (text: string): { status: number | null, output: string } {
  const r = spawnSync(requireTool(PROMTOOL, 'promtool'), ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, output: (r.stdout ?? '') + (r.stderr ?? '') }
}
