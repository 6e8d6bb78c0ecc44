import { constants } from 'node:os'
import type { EventEmitter } from 'node:events'
import type { Family, FamilySample, Labels, SlotStatus } from './merge.js'
import type { Spread } from './imbalance.js'
import { RESTART_REASONS, SHUTDOWN_REASONS, type InheritedListener, type SharedListenerRegistrar } from '@nclust/fastify-cluster'

/** The part of `@nclust/fastify-cluster`'s PrimaryHandle the metrics need (a fake works in tests). */
export interface PrimaryLike {
  role: 'primary'
  readonly size: number
  readonly events: EventEmitter
  workers (): Array<{ workerId: number, pid: number, state: string, generation: number, startedAt: number, restarts: number }>
  requestAll<T = unknown>(channel: string, payload?: unknown, options?: { timeout?: number }): Promise<Array<
    | { workerId: number, pid: number, ok: true, value: T, ms: number }
    | { workerId: number, pid: number, ok: false, error: string, ms: number }>>
  onClose (fn: () => void | Promise<void>): void
  /** Upgrade hand-over (optional: a primary that cannot upgrade has none); see @nclust/fastify-cluster's PrimaryHandle. */
  ready?: () => Promise<void>
  shareListener?: SharedListenerRegistrar
  inheritedListener?: (name: string) => InheritedListener | undefined
}

// Label values pre-set at 0 (so the first event shows in increase()): the supervisor's own lists,
// imported rather than copied, so they cannot drift from what it emits.
export { RESTART_REASONS, SHUTDOWN_REASONS }
export const RELOAD_OUTCOMES = ['success', 'failure'] as const

/** Exit code as a shell shows it: the code, or 128 + signal number for a signal. */
export function exitCodeOf (code: number | null, signal: string | null): number {
  if (typeof code === 'number') return code
  if (signal !== null) {
    const n = (constants.signals as Record<string, number | undefined>)[signal]
    if (n !== undefined) return 128 + n
  }
  return -1
}

/**
 * One counter or gauge family kept in memory, series in the order they first appear, as prom-client
 * keeps them (the primary loads no prom-client: see exposition.ts). Like prom-client, an unlabelled
 * family always has its one series, from 0; a labelled one has none until a value is set.
 */
class MetricFamily {
  private readonly series = new Map<string, FamilySample>()

  constructor (readonly name: string, readonly help: string, readonly type: 'counter' | 'gauge', private readonly labelled: boolean) {
    this.clear()
  }

  private static key (labels: Labels): string {
    return Object.keys(labels).sort().map((k) => `${k}:${String(labels[k])}`).join(',')
  }

  set (labels: Labels, value: number): void {
    const key = MetricFamily.key(labels)
    const sample = this.series.get(key)
    if (sample === undefined) this.series.set(key, { value, labels })
    else sample.value = value
  }

  inc (labels: Labels, by = 1): void {
    const key = MetricFamily.key(labels)
    const sample = this.series.get(key)
    if (sample === undefined) this.series.set(key, { value: by, labels })
    else sample.value += by
  }

  /** Drop every series (an unlabelled family goes back to its one series at 0). */
  clear (): void {
    this.series.clear()
    if (!this.labelled) this.series.set('', { value: 0, labels: {} })
  }

  snapshot (): Family {
    const values = [...this.series.values()].map((s) => ({ value: s.value, labels: s.labels }))
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values }
  }
}

export interface SupervisorMetrics {
  /** Record the outcome of one cluster scrape. */
  recordScrape (slots: SlotStatus[], seconds: number, spread: Spread | undefined): void
  /** The series now, in a fixed order (the gauges read from `handle.workers()` are read here). */
  families (): Family[]
  /** Stop listening to the handle's events. */
  detach (): void
}

/**
 * The supervisor's own series (all `nclust_*`, no `pid` label: they are about slots, not processes).
 * Counters are fed by the handle's events, gauges are read from `handle.workers()` at scrape time.
 */
export function registerSupervisorMetrics (handle: PrimaryLike): SupervisorMetrics {
  const slots = (): string[] => Array.from({ length: handle.size }, (_, i) => String(i))
  const workers = (): ReturnType<PrimaryLike['workers']> => {
    try { return handle.workers() } catch { return [] }
  }

  // In output order.
  const registered: MetricFamily[] = []
  const counter = (name: string, help: string, labelled = true): MetricFamily => register(new MetricFamily(name, help, 'counter', labelled))
  const gauge = (name: string, help: string, labelled = true): MetricFamily => register(new MetricFamily(name, help, 'gauge', labelled))
  const register = (family: MetricFamily): MetricFamily => {
    registered.push(family)
    return family
  }

  const desired = gauge('nclust_workers_desired', 'Worker processes the supervisor is asked to run (follows scaling)', false)
  const ready = gauge('nclust_workers_ready', 'Worker processes that are ready (listening and answering)', false)
  const byState = gauge('nclust_workers', 'Worker processes by state')
  const slotReady = gauge('nclust_worker_ready', '1 when the worker slot has a ready process, 0 when it has none (dead, restarting, starting)')
  const restarts = counter('nclust_worker_restarts_total', `Workers replaced by the supervisor, by slot and reason (${RESTART_REASONS.join(', ')})`)
  const exits = counter('nclust_worker_exits_total', 'Worker processes that exited, by slot and reason (requested exits included)')
  const lastExit = gauge('nclust_worker_last_exit_code', 'Exit code of the slot\'s last exited process (128 + signal number when killed by a signal)')
  const shutdowns = counter('nclust_shutdowns_total', `Cluster shutdowns started, by reason (${SHUTDOWN_REASONS.join(', ')})`)
  const crashLoops = counter('nclust_crash_loops_total', 'Crash loops detected by the supervisor, by slot')
  const reloads = counter('nclust_reloads_total', 'Rolling reloads finished, by outcome (success, failure: a new worker did not start or shutdown began)')
  const reloading = gauge('nclust_reload_in_progress', '1 while a rolling reload runs', false)
  const reloadSeconds = gauge('nclust_reload_duration_seconds', 'Seconds the last rolling reload took (successful or not)', false)
  const scrapeUp = gauge('nclust_scrape_worker_up', '1 when the worker answered the last cluster scrape in time, 0 when it did not (dead, starting, timed out, error)')
  const scrapeWorkerSeconds = gauge('nclust_scrape_worker_duration_seconds', 'Seconds the worker took to answer the last cluster scrape (or until it timed out)')
  const scrapeFailures = counter('nclust_scrape_worker_failures_total', 'Cluster scrapes in which the worker slot gave no good answer')
  const scrapeSeconds = gauge('nclust_scrape_duration_seconds', 'Seconds the last cluster scrape took, all workers included', false)
  const rate = gauge('nclust_worker_request_rate', 'Requests per second the worker slot answered over the imbalance window (from http_requests_total)')
  // Registered with the first measured window: absent until then, never a fake 0.
  const ratio = new MetricFamily('nclust_request_rate_imbalance_ratio', 'max / mean of the per-worker request rates over the imbalance window: 1 is even, N (worker count) is one worker taking everything; NaN without traffic', 'gauge', false)
  const cv = new MetricFamily('nclust_request_rate_cv', 'Coefficient of variation (stddev / mean) of the per-worker request rates over the imbalance window: 0 is even; NaN without traffic', 'gauge', false)
  const windowSeconds = new MetricFamily('nclust_request_rate_window_seconds', 'Seconds the per-worker request rates were measured over', 'gauge', false)

  let imbalanceRegistered = false

  // Zero the series alerts use with increase(), so the first event is an increase and not a new
  // series; again for the new slots after a scale up.
  const zeroSlots = (): void => {
    for (const s of slots()) {
      for (const reason of RESTART_REASONS) restarts.inc({ worker: s, reason }, 0)
      crashLoops.inc({ worker: s }, 0)
      scrapeFailures.inc({ worker: s }, 0)
    }
  }
  zeroSlots()
  for (const reason of SHUTDOWN_REASONS) shutdowns.inc({ reason }, 0)
  for (const outcome of RELOAD_OUTCOMES) reloads.inc({ outcome }, 0)

  const str = (v: unknown, fallback: string): string => (typeof v === 'string' || typeof v === 'number') ? String(v) : fallback
  const listeners: Array<[string, (e: Record<string, unknown>) => void]> = [
    ['restart', (e) => restarts.inc({ worker: str(e.workerId, 'unknown'), reason: str(e.reason, 'unknown') })],
    ['worker-exit', (e) => {
      const worker = str(e.workerId, 'unknown')
      exits.inc({ worker, reason: str(e.reason, 'unknown') })
      lastExit.set({ worker }, exitCodeOf(typeof e.code === 'number' ? e.code : null, typeof e.signal === 'string' ? e.signal : null))
    }],
    ['shutdown', (e) => shutdowns.inc({ reason: str(e.reason, 'unknown') })],
    ['crash-loop', (e) => crashLoops.inc({ worker: str(e.workerId, 'unknown') })],
    // Scaling: `nclust_workers_desired` reads handle.size at scrape time; new slots get their zeroed series.
    ['scale', (e) => { if (e.phase === 'done') zeroSlots() }],
    // Rolling reloads: `{ phase: 'start' }`, then `{ phase: 'done', ok, replaced, ms, ... }`.
    ['reload', (e) => {
      if (e.phase === 'start') {
        reloading.set({}, 1)
        return
      }
      reloading.set({}, 0)
      reloads.inc({ outcome: e.ok === true ? 'success' : 'failure' })
      if (typeof e.ms === 'number') reloadSeconds.set({}, e.ms / 1000)
    }]
  ]
  for (const [name, fn] of listeners) handle.events.on(name, fn)

  return {
    recordScrape (slotStatus, seconds, spread) {
      scrapeSeconds.set({}, seconds)
      for (const s of slotStatus) {
        const worker = String(s.worker)
        scrapeUp.set({ worker }, s.up ? 1 : 0)
        if (s.ms !== undefined) scrapeWorkerSeconds.set({ worker }, s.ms / 1000)
        if (!s.up) scrapeFailures.inc({ worker })
      }
      if (spread !== undefined) {
        if (!imbalanceRegistered) {
          imbalanceRegistered = true
          for (const g of [ratio, cv, windowSeconds]) register(g)
        }
        rate.clear()
        for (const [w, r] of spread.rates) rate.set({ worker: String(w) }, r)
        ratio.set({}, spread.maxOverMean)
        cv.set({}, spread.cv)
        windowSeconds.set({}, spread.seconds)
      }
    },
    families () {
      const now = workers()
      const readyNow = now.filter((w) => w.state === 'ready')
      desired.set({}, handle.size)
      ready.set({}, readyNow.length)
      const counts: Record<string, number> = { starting: 0, ready: 0, draining: 0 }
      for (const w of now) counts[w.state] = (counts[w.state] ?? 0) + 1
      byState.clear()
      for (const [state, n] of Object.entries(counts)) byState.set({ state }, n)
      const readySlots = new Set(readyNow.map((w) => String(w.workerId)))
      slotReady.clear()
      for (const s of slots()) slotReady.set({ worker: s }, readySlots.has(s) ? 1 : 0)
      return registered.map((f) => f.snapshot())
    },
    detach () {
      for (const [name, fn] of listeners) handle.events.off(name, fn)
    }
  }
}
