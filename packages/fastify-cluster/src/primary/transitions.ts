import type { ExitReason, ShutdownReason, SupervisorEvents, WorkerState } from '../types.js'
import type { ShutdownMessage } from '../messages.js'
import type { BackoffPolicy, CrashLoopPolicy } from './backoff.js'
import { onExit } from './exits.js'

/**
 * The slot machine's transitions as one pure function, `step(state, event) -> { state, effects }`,
 * the way policy.ts keeps decisions pure: no timers, no processes, no clock (times come in the
 * events). slots.ts is the shell that turns node:cluster callbacks and timers into events and
 * applies the effects (fork, send, kill, timers, log, emit); the property tests (test/transitions
 * .test.ts) drive this function with random event sequences and check the invariants.
 *
 *   fork(slot) ─► starting ──ready──► ready ──ask──► draining ──exit──► (gone)
 *                    │                  └──exit (crash, signal, hung) ─► backoff ─► restart-due ─► fork
 *                    │                                               └─ crash loop ─► shutdown, exit 1
 *                    └──exit / start-timeout, slot never ready ─► retry (startRetries) ─► verdict: shutdown, exit 1
 *
 * A *candidate* (forked by a replacement or a scale-up) takes its slot only once ready; if it dies
 * first, nothing restarts it: the policy that forked it reports the failure (and `refill`s the slot).
 *
 * Glossary. *slot*: a place for one serving worker; `key` never reused, `id` (0..n-1, reused after
 * a scale down) is the public `workerId` of events, logs and `nclust status`. *worker id* (`id` of
 * a ProcState, the `id` of every event here): node:cluster's worker.id, unique per fork. *pid*:
 * the OS process id, for people and signals only. *generation*: forks into a slot, from 0.
 * *pass*: one rolling reload over every slot; a reload asked during one queues the next pass.
 */

/** A worker's fatal message and stack, as kept by the primary, chars. */
export const MAX_FATAL_MESSAGE = 4 * 1024
export const MAX_FATAL_STACK = 16 * 1024

export interface MachineConfig {
  shutdownTimeout: number
  startTimeout: number
  startRetries: number
  restartBackoff: BackoffPolicy
  crashLoop: CrashLoopPolicy
  /** The primary exits with the shutdown's code after a crash loop or a start verdict. */
  handleSignals: boolean
}

export interface ProcState {
  /** node:cluster worker id. */
  id: number
  pid: number
  /** Key of its slot (slot ids are reused after a scale down, keys never). */
  slot: number
  slotId: number
  generation: number
  state: WorkerState
  startedAt: number
  readyAt: number | undefined
  lastBeat: number
  requests: number
  rss: number
  /** The primary asked it to exit: its exit is never replaced by the backoff path. */
  requested: boolean
  /** Reported as the exit reason instead of the observed one (`recycle`, `hung`). */
  exitAs: ExitReason | undefined
  startTimedOut: boolean
  /** Not ready yet and not the slot's worker: the slot's old worker (if any) still serves. */
  candidate: boolean
  fatal: string | undefined
  fatalStack: string | undefined
}

export interface SlotState {
  key: number
  id: number
  /** Generation of the newest fork into this slot. */
  generation: number
  /** Replacements after unexpected exits (and recycles). */
  restarts: number
  /** Unexpected exits in a row (reset by a long enough uptime): drives the backoff. */
  consecutive: number
  /** Times of unexpected exits inside the crash-loop window. */
  failures: number[]
  /** Failed starts while the slot has never been ready: drives the start verdict. */
  startFailures: number
  /** Worker id of the slot's serving (or starting, non-candidate) worker. */
  current: number | undefined
  /** A restart timer is armed. */
  restartPending: boolean
  everReady: boolean
  /** Retired by a scale down: never forked into again. */
  removed: boolean
}

export interface MachineState {
  readonly config: MachineConfig
  slots: SlotState[]
  /** Every process still alive, by worker id, in fork order. */
  procs: Map<number, ProcState>
  nextKey: number
  shutdown: ShutdownReason | undefined
  exitCode: number
  /** Exit the process with the code once the shutdown finishes. */
  exitProcess: boolean
  killed: Array<{ workerId: number, pid: number }>
  finished: boolean
  /**
   * Rolling reloads. `pass`: the number of the last pass started (0: none yet); `running`: that
   * pass is not done; `queued`: one more full pass starts when it is. Every source (SIGHUP,
   * --watch, `nclust reload`, handle.reload()) asks through `reload-request`: decided here only.
   */
  reload: { pass: number, running: boolean, queued: boolean }
}

export type Signal = 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGTTIN' | 'SIGTTOU'
type AskReason = ShutdownMessage['reason']

export type MachineEvent =
  | { type: 'add-slot' }
  | { type: 'retire-slot', slot: number }
  | { type: 'remove-slot', slot: number }
  | { type: 'fork', slot: number, candidate: boolean }
  | { type: 'forked', slot: number, id: number, pid: number, candidate: boolean, at: number }
  /** A replacement's candidate failed: an empty slot gets its normal restart. */
  | { type: 'refill', slot: number }
  | { type: 'ready', id: number, at: number }
  | { type: 'fatal', id: number, reason: string, message: string, stack?: string }
  | { type: 'heartbeat', id: number, at: number, requests: number, rss: number }
  | { type: 'exit', id: number, code: number | null, signal: NodeJS.Signals | null, at: number }
  | { type: 'start-timeout', id: number }
  | { type: 'restart-due', slot: number, at: number }
  | { type: 'kill-timer' }
  | { type: 'ask', id: number, reason: AskReason, exitAs?: ExitReason }
  | { type: 'exit-as', id: number, exitAs: ExitReason }
  | { type: 'count-restart', slot: number }
  | { type: 'shutdown', reason: ShutdownReason, signal?: NodeJS.Signals, exit?: boolean }
  /** `desired`: the replacer's worker count, for SIGTTIN / SIGTTOU. */
  | { type: 'signal', signal: Signal, desired: number }
  | { type: 'fail' }
  /** handle.reload(), `nclust reload`, --watch (SIGHUP comes as a `signal`): start a pass, or queue one. */
  | { type: 'reload-request', source?: string }
  /** The replacer finished the running pass (whatever its outcome). */
  | { type: 'reload-done' }

type Emit = { [K in keyof SupervisorEvents]: { type: 'emit', name: K, payload: SupervisorEvents[K][0] } }[keyof SupervisorEvents]
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'fatal'

export type Effect =
  | { type: 'fork', slot: number, slotId: number, generation: number, workers: number, candidate: boolean }
  /** Send the shutdown message; SIGTERM instead when it is still starting (or its channel is gone). */
  | { type: 'ask', id: number, reason: AskReason, deadline: number, starting: boolean }
  | { type: 'kill', id: number, signal: 'SIGKILL' }
  | { type: 'start-timer', id: number, ms: number } | { type: 'clear-start-timer', id: number }
  | { type: 'restart-timer', slot: number, ms: number } | { type: 'clear-restart-timer', slot: number }
  | { type: 'kill-timer', ms: number } | { type: 'clear-kill-timer' }
  /** `slot`: a slot key (its logger), or null for the cluster-wide logger. */
  | { type: 'log', level: LogLevel, slot: number | null, fields: Record<string, unknown>, msg: string }
  | Emit
  | { type: 'close-listener', slotId: number } | { type: 'close-listeners' }
  | { type: 'ready-waiters', ok: true } | { type: 'ready-waiters', ok: false, reason: string }
  | { type: 'finish', code: number, killed: Array<{ workerId: number, pid: number }>, exit: boolean }
  /** Run rolling-reload pass number `pass` (every slot, surge-first). */
  | { type: 'reload', pass: number }
  /** The answer to a reload request: it ends with pass `pass`, or is refused. */
  | { type: 'reload-answer', pass: number } | { type: 'reload-answer', refused: string }
  /** A queued pass that will never run (the shutdown began): its waiters get `reason`. */
  | { type: 'reload-cancelled', pass: number, reason: string }
  | { type: 'scale', n: number }
  /** A second TERM / INT once every worker is gone: stop waiting for the primary's close hooks. */
  | { type: 'force-close' }

export function initialState (config: MachineConfig, workers: number): MachineState {
  let s: MachineState = { config, slots: [], procs: new Map(), nextKey: 0, shutdown: undefined, exitCode: 0, exitProcess: false, killed: [], finished: false, reload: { pass: 0, running: false, queued: false } }
  for (let i = 0; i < workers; i++) s = step(s, { type: 'add-slot' }).state
  return s
}

function clone (s: MachineState): MachineState {
  return {
    ...s,
    slots: s.slots.map((x) => ({ ...x, failures: [...x.failures] })),
    procs: new Map([...s.procs].map(([k, p]) => [k, { ...p }])),
    killed: [...s.killed],
    reload: { ...s.reload }
  }
}

/** The one transition function. Never mutates `state`. */

/** A slot as `add-slot` creates it: never forked into, never ready. */
function newSlot (key: number, id: number): SlotState {
  return { key, id, generation: -1, restarts: 0, consecutive: 0, failures: [], startFailures: 0, current: undefined, restartPending: false, everReady: false, removed: false }
}

/** A process as `forked` creates it: starting, in `slot`'s newest generation. The one constructor. */
export function newProc (slot: Pick<SlotState, 'key' | 'id' | 'generation'>, f: { id: number, pid: number, candidate: boolean, at: number }): ProcState {
  return {
    id: f.id,
    pid: f.pid,
    slot: slot.key,
    slotId: slot.id,
    generation: slot.generation,
    state: 'starting',
    startedAt: f.at,
    readyAt: undefined,
    lastBeat: f.at,
    requests: 0,
    rss: 0,
    requested: false,
    exitAs: undefined,
    startTimedOut: false,
    candidate: f.candidate,
    fatal: undefined,
    fatalStack: undefined
  }
}

export function step (state: MachineState, event: MachineEvent): { state: MachineState, effects: Effect[] } {
  const s = clone(state)
  const fx: Effect[] = []
  const cfg = s.config
  const slotByKey = (key: number): SlotState | undefined => s.slots.find((x) => x.key === key)
  const log = (level: LogLevel, slot: number | null, fields: Record<string, unknown>, msg: string): void => {
    fx.push({ type: 'log', level, slot, fields, msg })
  }
  const moveTo = (p: ProcState, to: WorkerState): void => {
    const from = p.state
    p.state = to
    log('debug', p.slot, { workerPid: p.pid, generation: p.generation, from, to }, 'worker state')
    fx.push({ type: 'emit', name: 'state', payload: { workerId: p.slotId, pid: p.pid, generation: p.generation, from, to } })
  }
  const clearRestart = (slot: SlotState): void => {
    if (slot.restartPending) fx.push({ type: 'clear-restart-timer', slot: slot.key })
    slot.restartPending = false
  }
  const readyCheck = (): void => {
    if (s.slots.every((x) => x.everReady)) fx.push({ type: 'ready-waiters', ok: true })
  }

  function fork (slot: SlotState, candidate = false): void {
    if (s.shutdown !== undefined || slot.removed) return // never a fork once the shutdown began
    clearRestart(slot)
    slot.generation += 1
    fx.push({ type: 'fork', slot: slot.key, slotId: slot.id, generation: slot.generation, workers: s.slots.length, candidate })
  }

  function ask (p: ProcState, reason: AskReason, exitAs?: ExitReason): void {
    p.requested = true
    if (exitAs !== undefined) p.exitAs = exitAs
    if (p.state !== 'draining') moveTo(p, 'draining')
    fx.push({ type: 'ask', id: p.id, reason, deadline: cfg.shutdownTimeout, starting: p.readyAt === undefined })
  }

  function shutdown (reason: ShutdownReason, signal: NodeJS.Signals | undefined, exit: boolean): void {
    s.exitProcess ||= exit // an error in the primary during a close(): exit all the same
    if (s.shutdown !== undefined) return
    s.shutdown = reason
    log('info', null, { reason, signal, workers: s.procs.size, shutdownTimeout: cfg.shutdownTimeout }, 'shutting down: draining every worker')
    fx.push({ type: 'emit', name: 'shutdown', payload: { reason, ...(signal !== undefined ? { signal } : {}) } })
    fx.push({ type: 'ready-waiters', ok: false, reason })
    for (const slot of s.slots) clearRestart(slot)
    for (const p of s.procs.values()) if (p.state !== 'draining') ask(p, reason)
    fx.push({ type: 'close-listeners' })
    fx.push({ type: 'kill-timer', ms: cfg.shutdownTimeout })
    if (s.reload.queued) {
      s.reload.queued = false
      fx.push({ type: 'reload-cancelled', pass: s.reload.pass + 1, reason: 'shutting down' })
    }
    if (s.procs.size === 0) finish()
  }

  function finish (): void {
    if (s.finished) return
    s.finished = true
    fx.push({ type: 'clear-kill-timer' })
    fx.push({ type: 'finish', code: s.exitCode, killed: [...s.killed], exit: s.exitProcess })
  }

  /**
   * The one decision on a reload request, whoever asks: refused during a shutdown; else a pass
   * starts now, or (one already runs) exactly one more full pass is queued behind it, and every
   * further request joins that queued pass. So every slot ends on code at least as new as the
   * newest request.
   */
  function requestReload (source: string): void {
    if (s.shutdown !== undefined) {
      log('warn', null, { source }, `reload (${source}) refused: the cluster is shutting down`)
      fx.push({ type: 'reload-answer', refused: 'shutting down' })
      return
    }
    if (!s.reload.running) {
      startPass()
    } else if (!s.reload.queued) {
      s.reload.queued = true
      log('info', null, { source, running: s.reload.pass }, `reload (${source}) queued: one more full pass after the running one`)
    } else {
      log('info', null, { source, running: s.reload.pass }, `reload (${source}) joins the pass already queued`)
    }
    fx.push({ type: 'reload-answer', pass: s.reload.running && s.reload.queued ? s.reload.pass + 1 : s.reload.pass })
  }

  function startPass (): void {
    s.reload.pass += 1
    s.reload.running = true
    s.reload.queued = false
    fx.push({ type: 'reload', pass: s.reload.pass })
  }

  function killAll (): void {
    for (const p of s.procs.values()) {
      s.killed.push({ workerId: p.slotId, pid: p.pid })
      fx.push({ type: 'kill', id: p.id, signal: 'SIGKILL' })
    }
  }

  switch (event.type) {
    case 'add-slot': {
      s.slots.push(newSlot(s.nextKey++, s.slots.length))
      break
    }
    case 'retire-slot':
    case 'remove-slot': {
      const slot = slotByKey(event.slot)
      if (slot === undefined) break
      clearRestart(slot)
      slot.removed = true
      if (event.type === 'retire-slot') break
      fx.push({ type: 'close-listener', slotId: slot.id }) // kernel balancing: a socket nobody accepts on would hold connections forever
      s.slots.splice(s.slots.indexOf(slot), 1)
      readyCheck()
      break
    }
    case 'fork': {
      const slot = slotByKey(event.slot)
      if (slot !== undefined) fork(slot, event.candidate)
      break
    }
    case 'forked': {
      const slot = slotByKey(event.slot)
      if (slot === undefined) break
      const p = newProc(slot, event)
      s.procs.set(p.id, p)
      if (!p.candidate) slot.current = p.id
      log('info', slot.key, { workerPid: p.pid, generation: p.generation, candidate: p.candidate }, 'worker forked')
      fx.push({ type: 'emit', name: 'state', payload: { workerId: slot.id, pid: p.pid, generation: p.generation, from: null, to: 'starting' } })
      fx.push({ type: 'start-timer', id: p.id, ms: cfg.startTimeout })
      break
    }
    case 'refill': {
      const slot = slotByKey(event.slot)
      if (slot !== undefined && slot.current === undefined && !slot.restartPending && !candidateIn(s, slot)) fork(slot)
      break
    }
    case 'ready': {
      const p = s.procs.get(event.id)
      if (p === undefined || p.state !== 'starting') break
      fx.push({ type: 'clear-start-timer', id: p.id })
      p.readyAt = event.at
      p.lastBeat = event.at
      const slot = slotByKey(p.slot)
      if (p.candidate) {
        // A replacement's new generation takes over the slot; the replacement drains the old worker.
        p.candidate = false
        if (slot !== undefined) { clearRestart(slot); slot.current = p.id }
      }
      moveTo(p, 'ready')
      const startMs = p.readyAt - p.startedAt
      log('info', p.slot, { workerPid: p.pid, generation: p.generation, startMs }, 'worker ready')
      fx.push({ type: 'emit', name: 'worker-ready', payload: { workerId: p.slotId, pid: p.pid, generation: p.generation, startMs } })
      if (s.shutdown !== undefined) { ask(p, 'close'); break } // ready after the shutdown began: it must drain too
      if (slot === undefined) break
      slot.everReady = true
      slot.startFailures = 0
      readyCheck()
      break
    }
    case 'fatal': {
      const p = s.procs.get(event.id)
      if (p === undefined) break
      // A worker decides their size; the primary keeps them (in its logs, events, `nclust reload`): capped.
      p.fatal = event.message.slice(0, MAX_FATAL_MESSAGE)
      p.fatalStack = event.stack?.slice(0, MAX_FATAL_STACK)
      // A failed start is reported once per try at the exit, and with its stack once at the verdict.
      if (event.reason !== 'startFailed') log('error', p.slot, { workerPid: p.pid, reason: event.reason, error: event.message }, 'worker reported a fatal error')
      break
    }
    case 'heartbeat': {
      const p = s.procs.get(event.id)
      if (p === undefined) break
      p.lastBeat = event.at
      p.requests = event.requests
      p.rss = event.rss
      break
    }
    case 'exit': onExit(s, event, fx, { log, moveTo, fork, shutdown, finish, newSlot }); break
    case 'start-timeout': {
      const p = s.procs.get(event.id)
      if (p === undefined || p.state !== 'starting') break
      p.startTimedOut = true
      log('error', p.slot, { workerPid: p.pid, startTimeout: cfg.startTimeout }, `worker not ready within ${cfg.startTimeout}ms: killing it`)
      fx.push({ type: 'kill', id: p.id, signal: 'SIGKILL' })
      break
    }
    case 'restart-due': {
      const slot = slotByKey(event.slot)
      if (slot === undefined || !slot.restartPending) break
      slot.restartPending = false
      // A replacement's candidate may already be on its way into this slot.
      if (slot.current === undefined && !candidateIn(s, slot)) fork(slot)
      break
    }
    case 'kill-timer': {
      if (s.shutdown === undefined || s.finished) break
      for (const p of s.procs.values()) {
        log('error', p.slot, { workerPid: p.pid, shutdownTimeout: cfg.shutdownTimeout },
          `worker ${p.slotId} (pid ${p.pid}) still alive after ${cfg.shutdownTimeout}ms: SIGKILL`)
      }
      killAll()
      s.exitCode = 1
      break
    }
    case 'ask': {
      const p = s.procs.get(event.id)
      if (p !== undefined) ask(p, event.reason, event.exitAs)
      break
    }
    case 'exit-as': {
      const p = s.procs.get(event.id)
      if (p !== undefined) p.exitAs = event.exitAs
      break
    }
    case 'count-restart': {
      const slot = slotByKey(event.slot)
      if (slot !== undefined) slot.restarts += 1
      break
    }
    case 'shutdown': shutdown(event.reason, event.signal, event.exit ?? false); break
    case 'signal': {
      const sig = event.signal
      if (sig === 'SIGTERM' || sig === 'SIGINT') {
        if (s.shutdown !== undefined) {
          // A second signal during shutdown: SIGKILL everyone now.
          log('warn', null, { signal: sig, workers: s.procs.size }, 'second signal during shutdown: killing every worker now')
          s.exitCode = 1
          killAll()
          if (s.finished) fx.push({ type: 'force-close' }) // only the close hooks are left: stop waiting for them
          break
        }
        log('info', null, { signal: sig }, `${sig} received`)
        shutdown('signal', sig, true)
        break
      }
      if (sig === 'SIGHUP') { requestReload('SIGHUP'); break }
      if (s.shutdown !== undefined) break
      if (sig === 'SIGTTIN') fx.push({ type: 'scale', n: event.desired + 1 })
      else if (event.desired > 1) fx.push({ type: 'scale', n: event.desired - 1 })
      else log('warn', null, { workers: 1 }, 'SIGTTOU: already at 1 worker, never fewer')
      break
    }
    case 'fail': s.exitCode = 1; break
    case 'reload-request': requestReload(event.source ?? 'request'); break
    case 'reload-done': {
      if (!s.reload.running) break
      s.reload.running = false
      if (s.reload.queued && s.shutdown === undefined) startPass()
      break
    }
  }
  return { state: s, effects: fx }
}

export function candidateIn (s: MachineState, slot: SlotState): boolean {
  for (const p of s.procs.values()) if (p.slot === slot.key && p.candidate) return true
  return false
}
