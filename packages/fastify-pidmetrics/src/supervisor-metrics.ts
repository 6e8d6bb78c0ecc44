import { constants } from 'node:os'
import type { EventEmitter } from 'node:events'
import { Counter, Gauge, type Registry } from './prom.js'
import type { SlotStatus } from './merge.js'
import type { Spread } from './imbalance.js'

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
}

export const RESTART_REASONS = ['crash', 'signal', 'hung', 'start-failed', 'start-timeout', 'recycle'] as const
export const SHUTDOWN_REASONS = ['signal', 'close', 'crash-loop', 'start-failed'] as const
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

export interface SupervisorMetrics {
  /** Record the outcome of one cluster scrape. */
  recordScrape (slots: SlotStatus[], seconds: number, spread: Spread | undefined): void
  /** Stop listening to the handle's events. */
  detach (): void
}

/**
 * The supervisor's own series (all `nclust_*`, no `pid` label: they are about slots, not processes).
 * Counters are fed by the handle's events, gauges are read from `handle.workers()` at scrape time.
 */
export function registerSupervisorMetrics (registry: Registry, handle: PrimaryLike): SupervisorMetrics {
  const slots = (): string[] => Array.from({ length: handle.size }, (_, i) => String(i))
  const workers = (): ReturnType<PrimaryLike['workers']> => {
    try { return handle.workers() } catch { return [] }
  }

  // Gauges read at scrape time through their collect(); kept in an array only to satisfy no-new.
  const gauges: Gauge[] = []
  gauges.push(new Gauge({
    name: 'nclust_workers_desired',
    help: 'Worker processes the supervisor is asked to run (follows scaling)',
    registers: [registry],
    collect () { this.set(handle.size) }
  }))
  gauges.push(new Gauge({
    name: 'nclust_workers_ready',
    help: 'Worker processes that are ready (listening and answering)',
    registers: [registry],
    collect () { this.set(workers().filter((w) => w.state === 'ready').length) }
  }))
  gauges.push(new Gauge({
    name: 'nclust_workers',
    help: 'Worker processes by state',
    labelNames: ['state'],
    registers: [registry],
    collect () {
      const counts: Record<string, number> = { starting: 0, ready: 0, draining: 0 }
      for (const w of workers()) counts[w.state] = (counts[w.state] ?? 0) + 1
      this.reset()
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n)
    }
  }))
  gauges.push(new Gauge({
    name: 'nclust_worker_ready',
    help: '1 when the worker slot has a ready process, 0 when it has none (dead, restarting, starting)',
    labelNames: ['worker'],
    registers: [registry],
    collect () {
      const ready = new Set(workers().filter((w) => w.state === 'ready').map((w) => String(w.workerId)))
      this.reset()
      for (const s of slots()) this.set({ worker: s }, ready.has(s) ? 1 : 0)
    }
  }))
  const restarts = new Counter({
    name: 'nclust_worker_restarts_total',
    help: 'Workers replaced by the supervisor, by slot and reason (crash, signal, hung, start-failed, start-timeout, recycle)',
    labelNames: ['worker', 'reason'],
    registers: [registry]
  })
  const exits = new Counter({
    name: 'nclust_worker_exits_total',
    help: 'Worker processes that exited, by slot and reason (requested exits included)',
    labelNames: ['worker', 'reason'],
    registers: [registry]
  })
  const lastExit = new Gauge({
    name: 'nclust_worker_last_exit_code',
    help: 'Exit code of the slot\'s last exited process (128 + signal number when killed by a signal)',
    labelNames: ['worker'],
    registers: [registry]
  })
  const shutdowns = new Counter({
    name: 'nclust_shutdowns_total',
    help: 'Cluster shutdowns started, by reason (signal, close, crash-loop)',
    labelNames: ['reason'],
    registers: [registry]
  })
  const crashLoops = new Counter({
    name: 'nclust_crash_loops_total',
    help: 'Crash loops detected by the supervisor, by slot',
    labelNames: ['worker'],
    registers: [registry]
  })
  const reloads = new Counter({
    name: 'nclust_reloads_total',
    help: 'Rolling reloads finished, by outcome (success, failure: a new worker did not start or shutdown began)',
    labelNames: ['outcome'],
    registers: [registry]
  })
  const reloading = new Gauge({
    name: 'nclust_reload_in_progress',
    help: '1 while a rolling reload runs',
    registers: [registry]
  })
  const reloadSeconds = new Gauge({
    name: 'nclust_reload_duration_seconds',
    help: 'Seconds the last rolling reload took (successful or not)',
    registers: [registry]
  })
  reloading.set(0)
  const scrapeUp = new Gauge({
    name: 'nclust_scrape_worker_up',
    help: '1 when the worker answered the last cluster scrape in time, 0 when it did not (dead, starting, timed out, error)',
    labelNames: ['worker'],
    registers: [registry]
  })
  const scrapeWorkerSeconds = new Gauge({
    name: 'nclust_scrape_worker_duration_seconds',
    help: 'Seconds the worker took to answer the last cluster scrape (or until it timed out)',
    labelNames: ['worker'],
    registers: [registry]
  })
  const scrapeFailures = new Counter({
    name: 'nclust_scrape_worker_failures_total',
    help: 'Cluster scrapes in which the worker slot gave no good answer',
    labelNames: ['worker'],
    registers: [registry]
  })
  const scrapeSeconds = new Gauge({
    name: 'nclust_scrape_duration_seconds',
    help: 'Seconds the last cluster scrape took, all workers included',
    registers: [registry]
  })
  const rate = new Gauge({
    name: 'nclust_worker_request_rate',
    help: 'Requests per second the worker slot answered over the imbalance window (from http_requests_total)',
    labelNames: ['worker'],
    registers: [registry]
  })
  const ratio = new Gauge({
    name: 'nclust_request_rate_imbalance_ratio',
    help: 'max / mean of the per-worker request rates over the imbalance window: 1 is even, N (worker count) is one worker taking everything; NaN without traffic',
    registers: [registry]
  })
  const cv = new Gauge({
    name: 'nclust_request_rate_cv',
    help: 'Coefficient of variation (stddev / mean) of the per-worker request rates over the imbalance window: 0 is even; NaN without traffic',
    registers: [registry]
  })
  const windowSeconds = new Gauge({
    name: 'nclust_request_rate_window_seconds',
    help: 'Seconds the per-worker request rates were measured over',
    registers: [registry]
  })

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
        reloading.set(1)
        return
      }
      reloading.set(0)
      reloads.inc({ outcome: e.ok === true ? 'success' : 'failure' })
      if (typeof e.ms === 'number') reloadSeconds.set(e.ms / 1000)
    }]
  ]
  for (const [name, fn] of listeners) handle.events.on(name, fn)

  return {
    recordScrape (slotStatus, seconds, spread) {
      scrapeSeconds.set(seconds)
      for (const s of slotStatus) {
        const worker = String(s.worker)
        scrapeUp.set({ worker }, s.up ? 1 : 0)
        if (s.ms !== undefined) scrapeWorkerSeconds.set({ worker }, s.ms / 1000)
        if (!s.up) scrapeFailures.inc({ worker })
      }
      if (spread !== undefined) {
        rate.reset()
        for (const [w, r] of spread.rates) rate.set({ worker: String(w) }, r)
        ratio.set(spread.maxOverMean)
        cv.set(spread.cv)
        windowSeconds.set(spread.seconds)
      }
    },
    detach () {
      for (const [name, fn] of listeners) handle.events.off(name, fn)
    }
  }
}
