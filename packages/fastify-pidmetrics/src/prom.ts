import { createRequire } from 'node:module'
import type * as PromClient from 'prom-client'

/**
 * prom-client for the primary's half, class by class from prom-client's own files.
 *
 * `import ... from 'prom-client'` loads every default metric at import time, and its CPU metric loads
 * `@opentelemetry/api` (for exemplars): about 9 MB of RSS in a primary whose whole budget over a bare
 * node:cluster primary is a few MB (bench/primary-rss.mjs). The classes are the same objects the
 * index exports (it requires these very files), so output and behaviour are prom-client's.
 */
const require = createRequire(import.meta.url)

export const Registry = require('prom-client/lib/registry') as typeof PromClient.Registry
// eslint-disable-next-line @typescript-eslint/no-redeclare -- the value and its type under one name, as a class gives
export type Registry = PromClient.Registry
export const Counter = require('prom-client/lib/counter') as typeof PromClient.Counter
// eslint-disable-next-line @typescript-eslint/no-redeclare -- the value and its type under one name, as a class gives
export type Counter<T extends string = string> = PromClient.Counter<T>
export const Gauge = require('prom-client/lib/gauge') as typeof PromClient.Gauge
// eslint-disable-next-line @typescript-eslint/no-redeclare -- the value and its type under one name, as a class gives
export type Gauge<T extends string = string> = PromClient.Gauge<T>

/** prom-client default metrics the primary exports (its files, registered one by one). */
const PRIMARY_DEFAULTS = [
  'processStartTime', 'osMemoryHeap', 'processOpenFileDescriptors', 'processMaxFileDescriptors',
  'eventLoopLag', 'heapSizeAndUsed', 'version'
] as const

/**
 * The primary's own process metrics: prom-client's defaults above, plus the three CPU counters
 * written here under prom-client's names (its CPU module is the one that loads OpenTelemetry).
 * Not exported for the primary: gc, heap spaces, handles/requests/resources.
 */
export function collectPrimaryMetrics (registry: Registry): void {
  for (const name of PRIMARY_DEFAULTS) {
    (require(`prom-client/lib/metrics/${name}`) as (r: Registry, c: object) => void)(registry, {})
  }
  let last = process.cpuUsage()
  const user = new Counter({ name: 'process_cpu_user_seconds_total', help: 'Total user CPU time spent in seconds.', registers: [registry] })
  const system = new Counter({ name: 'process_cpu_system_seconds_total', help: 'Total system CPU time spent in seconds.', registers: [registry] })
  // eslint-disable-next-line no-new
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds.',
    registers: [registry],
    collect () {
      const now = process.cpuUsage()
      const u = (now.user - last.user) / 1e6
      const s = (now.system - last.system) / 1e6
      last = now
      user.inc(u)
      system.inc(s)
      this.inc(u + s)
    }
  })
}
