import type { ExitReason, RecycleEvent, ReloadResult, ScaleResult } from '../types.js'
import type { ShutdownMessage } from '../messages.js'
import type { Proc, Slot, SlotMachine } from './slots.js'
import { reloadDrainLimit, scalePlan } from './policy.js'
import { MAX_WORKERS } from '../options.js'

/**
 * Every policy that changes which workers serve goes through here, one operation at a time:
 *
 *   reload()        for each slot: replace(slot)                    (SIGHUP)
 *   recycle(proc)   replace(proc.slot), once per worker             (maxRequests, maxRss)
 *   scale(n)        up: fork candidates into new slots, wait ready; down: retire the highest slots
 *
 * `replace(slot)` is the one surge-first path: fork the slot's next generation beside the serving
 * worker, wait until it is ready, then drain the old one (SIGKILL at shutdownTimeout). A reload
 * goes on to the next slot while the old worker drains, with at most `reloadDrainLimit(N)` old
 * workers draining at once (policy.ts states the time bound). A new worker that fails to start
 * leaves the old one serving. Operations queue behind each other, so two
 * replacements never overlap and a scale never races a reload.
 */
export interface Replacer {
  /** Ask for a rolling reload (the machine starts a pass or queues one); resolves with the pass that covers it. */
  reload (source?: string): Promise<ReloadResult>
  /** Run pass `pass` (the machine's `reload` effect). */
  runPass (pass: number): void
  /** A queued pass the shutdown cancelled: its waiters get `reason`. */
  cancelPass (pass: number, reason: string): void
  recycle (proc: Proc, why: RecycleEvent['why'], value: number, limit: number): void
  scale (n: number): Promise<ScaleResult>
  /** Desired worker count: the target of the last scale() (or the slot count). */
  readonly desired: number
}

export function createReplacer (m: SlotMachine): Replacer {
  const { events, log, options, now } = m
  let queue: Promise<unknown> = Promise.resolve()
  let desired = m.slots.length

  /** Run `op` after every operation queued before it. */
  function serial<T> (op: () => Promise<T>): Promise<T> {
    const run = queue.then(op, op)
    queue = run.catch(() => {})
    return run
  }

  /** Ask `proc` to drain and exit; SIGKILL it at shutdownTimeout. Resolves once it is gone. */
  function retire (proc: Proc, reason: ShutdownMessage['reason'], exitAs?: ExitReason): Promise<void> {
    if (!m.procs.has(proc.worker.id)) return Promise.resolve()
    const gone = new Promise<void>((resolve) => proc.worker.once('exit', () => resolve()))
    const timer = setTimeout(() => {
      proc.slot.log.error({ workerPid: proc.pid }, `old worker still alive after ${options.shutdownTimeout}ms: SIGKILL`)
      proc.worker.process.kill('SIGKILL')
    }, options.shutdownTimeout)
    m.askToExit(proc, reason, exitAs)
    return gone.finally(() => clearTimeout(timer))
  }

  /**
   * The surge-first replacement of one slot's worker. With `draining`, the old worker's drain is
   * added to that set instead of awaited: a reload starts the next slot while it drains.
   */
  async function replace (slot: Slot, why: 'reload' | 'recycle', draining?: Set<Promise<void>>): Promise<'ready' | ExitReason> {
    const old = slot.current
    const next = m.fork(slot, true)
    if (next === undefined) return 'requested' // the shutdown began: no fork after that
    const outcome = await m.settled(next)
    if (outcome !== 'ready') {
      slot.log.error({ workerPid: next.pid, generation: next.generation, outcome, why },
        `${why}: worker ${slot.id} generation ${next.generation} did not start (${outcome}); the old worker keeps serving`)
      // A slot left empty by a crash during the replacement gets its normal restart.
      m.refill(slot)
      return outcome
    }
    if (old === undefined) return 'ready'
    const gone = retire(old, why, why === 'recycle' ? 'recycle' : 'requested')
    if (draining === undefined) await gone
    else {
      const entry: Promise<void> = gone.finally(() => draining.delete(entry))
      draining.add(entry)
    }
    return 'ready'
  }

  /** Waiters of each reload pass, by pass number (the machine says which pass answers a request). */
  const waiters = new Map<number, Array<(r: ReloadResult) => void>>()

  /** Ask for a reload: resolves with the outcome of the pass that covers this request. */
  function reload (source?: string): Promise<ReloadResult> {
    const started = now()
    const answer = m.requestReload(source)
    if ('refused' in answer) return Promise.resolve({ ok: false, replaced: 0, ms: 0, reason: answer.refused, slots: [] })
    return new Promise((resolve) => {
      const list = waiters.get(answer.pass) ?? []
      list.push((r) => resolve({ ...r, ms: now() - started }))
      waiters.set(answer.pass, list)
    })
  }

  function settle (pass: number, r: ReloadResult): void {
    const list = waiters.get(pass) ?? []
    waiters.delete(pass)
    for (const fn of list) fn(r)
  }

  /** Where every slot ended: its serving worker's generation and pid. */
  function ends (): ReloadResult['slots'] {
    return m.slots.map((slot) => ({ workerId: slot.id, generation: slot.current?.generation ?? null, pid: slot.current?.pid ?? null }))
  }

  /** One full pass, as the machine ordered it (transitions.ts decides when a pass runs). */
  function runPass (pass: number): void {
    const started = now()
    const result = (fields: Omit<ReloadResult, 'ms' | 'slots'>): ReloadResult => ({ ...fields, ms: now() - started, slots: ends() })
    void serial(async (): Promise<ReloadResult> => {
      // Old workers drain concurrently (up to the limit): one slow client per worker costs one drain
      // deadline per ⌈N / limit⌉ slots, not one per slot (bound in policy.ts, reloadDrainLimit).
      const limit = reloadDrainLimit(m.slots.length)
      const draining = new Set<Promise<void>>()
      log.info({ workers: m.slots.length, pass, drainLimit: limit }, 'rolling reload: one slot at a time')
      events.emit('reload', { phase: 'start' })
      let replaced = 0
      try {
        for (const slot of [...m.slots]) {
          while (draining.size >= limit) await Promise.race(draining)
          if (m.shuttingDown) return result({ ok: false, replaced, reason: 'shutdown began' })
          const outcome = await replace(slot, 'reload', draining)
          if (outcome !== 'ready') return result({ ok: false, replaced, failedWorkerId: slot.id, reason: outcome })
          replaced += 1
        }
        await Promise.all(draining) // its old workers gone: counted in the pass's time
        return result({ ok: true, replaced })
      } finally {
        await Promise.all(draining) // the pass is over once its old workers are gone, whatever its outcome
      }
    }).then((r) => {
      const gens = r.slots.map((x) => `${x.workerId}:${x.generation ?? '-'}`).join(' ')
      log[r.ok ? 'info' : 'error']({ ...r, pass }, r.ok ? `rolling reload done: ${r.replaced} workers replaced (generations ${gens})` : 'rolling reload failed')
      events.emit('reload', { phase: 'done', ...r })
      settle(pass, r)
      m.reloadDone()
    })
  }

  function recycle (proc: Proc, why: RecycleEvent['why'], value: number, limit: number): void {
    if (proc.recycling || m.shuttingDown) return
    proc.recycling = true
    const slot = proc.slot
    const detail = { workerPid: proc.pid, generation: proc.generation, why, value, limit }
    slot.log.info(detail, `recycle queued: worker ${slot.id} is over ${why} (${value} > ${limit})`)
    void serial(async () => {
      if (m.shuttingDown || slot.current !== proc || proc.state !== 'ready') return
      const t0 = now()
      slot.log.info(detail, `recycle start: replacing worker ${slot.id} (${why})`)
      events.emit('recycle', { workerId: slot.id, pid: proc.pid, why, value, limit })
      events.emit('restart', { workerId: slot.id, attempt: 0, delay: 0, reason: 'recycle' })
      m.countRestart(slot)
      const outcome = await replace(slot, 'recycle')
      if (outcome === 'ready') slot.log.info({ ...detail, ms: now() - t0 }, `recycle done: worker ${slot.id} replaced`)
      else proc.recycling = false // try again on a later sample
    })
  }

  function scale (n: number): Promise<ScaleResult> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
      return Promise.resolve({ ok: false, from: desired, to: n, size: m.slots.length, ms: 0, reason: `expected an integer from 1 to ${MAX_WORKERS}` })
    }
    desired = n
    return serial(async (): Promise<ScaleResult> => {
      const started = now()
      const from = m.slots.length
      const result = (ok: boolean, reason?: string): ScaleResult =>
        ({ ok, from, to: n, size: m.slots.length, ms: now() - started, ...(reason !== undefined ? { reason } : {}) })
      if (m.shuttingDown) return result(false, 'shutting down')
      const plan = scalePlan(from, n)
      if (plan.add.length === 0 && plan.remove.length === 0) return result(true)
      log.info({ from, to: n }, `scaling from ${from} to ${n} workers`)
      events.emit('scale', { phase: 'start', from, to: n })
      let r: ScaleResult
      if (plan.add.length > 0) {
        // Forked as candidates: a new slot that cannot start is dropped, never restarted in a loop.
        const added = plan.add.map(() => m.addSlot())
        const outcomes = await Promise.all(added.map(async (slot) => {
          const proc = m.fork(slot, true)
          return proc === undefined ? 'requested' : await m.settled(proc)
        }))
        // Slot ids stay dense: from the first new slot that failed, drop it and every new slot above it.
        const firstFailed = outcomes.findIndex((o) => o !== 'ready')
        if (firstFailed >= 0) {
          for (const slot of added.slice(firstFailed).reverse()) {
            m.retireSlot(slot)
            if (slot.current !== undefined) await retire(slot.current, 'scale')
            m.removeSlot(slot)
          }
        }
        r = firstFailed < 0 ? result(true) : result(false, `worker ${added[firstFailed]?.id ?? '?'} did not start (${String(outcomes[firstFailed])})`)
      } else {
        const removed = plan.remove.map((id) => m.slots[id]).filter((s): s is Slot => s !== undefined)
        for (const slot of removed) m.retireSlot(slot)
        await Promise.all(removed.map(async (slot) => {
          const live = [...m.procs.values()].filter((p) => p.slot === slot)
          await Promise.all(live.map(async (p) => await retire(p, 'scale')))
        }))
        for (const slot of removed) m.removeSlot(slot)
        r = result(true)
      }
      if (!r.ok) desired = m.slots.length
      log[r.ok ? 'info' : 'error']({ ...r }, r.ok ? `scaled to ${r.size} workers` : 'scaling failed')
      events.emit('scale', { phase: 'done', ...r })
      return r
    })
  }

  return {
    reload,
    runPass,
    cancelPass (pass, reason) { settle(pass, { ok: false, replaced: 0, ms: 0, reason, slots: ends() }) },
    recycle,
    scale,
    get desired () { return desired }
  }
}
