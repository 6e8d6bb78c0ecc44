import type { ExitReason, ShutdownReason, SupervisorEvents, WorkerState } from '../types.js'
import type { ShutdownMessage } from '../messages.js'
import type { BackoffPolicy, CrashLoopPolicy } from './backoff.js'

/**
 * The slot machine's vocabulary (state, events, effects), its two constructors, and `Draft`: the
 * operations every transition shares (log, move a process, fork, ask, shut down, finish, reload),
 * on the draft state of one `step`. transitions.ts (the handler of each event) and exits.ts (the
 * `exit` handler) both build on this module; neither imports the other's internals.
 */

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
  /** The last heartbeat's CPU and event-loop utilisation, null until one says so. */
  cpu: number | null
  elu: number | null
  /** Heartbeats received: 0 until the first (status shows no usage before it). */
  heartbeats: number
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
  /** The last exit the primary did not ask for (with the worker's fatal message and stack), for `nclust status` and `nclust reload`. */
  lastExit: LastExit | undefined
}

export interface LastExit {
  pid: number
  reason: ExitReason
  code: number | null
  signal: NodeJS.Signals | null
  error?: string
  stack?: string
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
  /** Restarts scheduled after unexpected exits, every slot together (`nclust status`). */
  restarts: number
  /**
   * Rolling reloads. `pass`: the number of the last pass started (0: none yet); `running`: that
   * pass is not done; `queued`: one more full pass starts when it is. Every source (SIGHUP,
   * --watch, `nclust reload`, handle.reload()) asks through `reload-request`: decided here only.
   */
  reload: { pass: number, running: boolean, queued: boolean }
}

export type Signal = 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGTTIN' | 'SIGTTOU'
export type AskReason = ShutdownMessage['reason']

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
  | { type: 'heartbeat', id: number, at: number, requests: number, rss: number, cpu?: number, elu?: number }
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

/** A slot as `add-slot` creates it: never forked into, never ready. */
export function newSlot (key: number, id: number): SlotState {
  return { key, id, generation: -1, restarts: 0, consecutive: 0, failures: [], startFailures: 0, current: undefined, restartPending: false, everReady: false, removed: false, lastExit: undefined }
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
    cpu: null,
    elu: null,
    heartbeats: 0,
    requested: false,
    exitAs: undefined,
    startTimedOut: false,
    candidate: f.candidate,
    fatal: undefined,
    fatalStack: undefined
  }
}

export function clone (s: MachineState): MachineState {
  return {
    ...s,
    slots: s.slots.map((x) => ({ ...x, failures: [...x.failures] })),
    procs: new Map([...s.procs].map(([k, p]) => [k, { ...p }])),
    killed: [...s.killed],
    reload: { ...s.reload }
  }
}

/** One `step`'s draft: the cloned state it changes and the effects it pushes. */
export class Draft {
  readonly fx: Effect[] = []
  constructor (readonly s: MachineState) {}

  get cfg (): MachineConfig { return this.s.config }

  slotByKey (key: number): SlotState | undefined { return this.s.slots.find((x) => x.key === key) }

  log (level: LogLevel, slot: number | null, fields: Record<string, unknown>, msg: string): void {
    this.fx.push({ type: 'log', level, slot, fields, msg })
  }

  moveTo (p: ProcState, to: WorkerState): void {
    const from = p.state
    p.state = to
    this.log('debug', p.slot, { workerPid: p.pid, generation: p.generation, from, to }, 'worker state')
    this.fx.push({ type: 'emit', name: 'state', payload: { workerId: p.slotId, pid: p.pid, generation: p.generation, from, to } })
  }

  clearRestart (slot: SlotState): void {
    if (slot.restartPending) this.fx.push({ type: 'clear-restart-timer', slot: slot.key })
    slot.restartPending = false
  }

  readyCheck (): void {
    if (this.s.slots.every((x) => x.everReady)) this.fx.push({ type: 'ready-waiters', ok: true })
  }

  fork (slot: SlotState, candidate = false): void {
    if (this.s.shutdown !== undefined || slot.removed) return // never a fork once the shutdown began
    this.clearRestart(slot)
    slot.generation += 1
    this.fx.push({ type: 'fork', slot: slot.key, slotId: slot.id, generation: slot.generation, workers: this.s.slots.length, candidate })
  }

  ask (p: ProcState, reason: AskReason, exitAs?: ExitReason): void {
    p.requested = true
    if (exitAs !== undefined) p.exitAs = exitAs
    if (p.state !== 'draining') this.moveTo(p, 'draining')
    this.fx.push({ type: 'ask', id: p.id, reason, deadline: this.cfg.shutdownTimeout, starting: p.readyAt === undefined })
  }

  shutdown (reason: ShutdownReason, signal: NodeJS.Signals | undefined, exit: boolean): void {
    const s = this.s
    s.exitProcess ||= exit // an error in the primary during a close(): exit all the same
    if (s.shutdown !== undefined) return
    s.shutdown = reason
    this.log('info', null, { reason, signal, workers: s.procs.size, shutdownTimeout: this.cfg.shutdownTimeout }, 'shutting down: draining every worker')
    this.fx.push({ type: 'emit', name: 'shutdown', payload: { reason, ...(signal !== undefined ? { signal } : {}) } })
    this.fx.push({ type: 'ready-waiters', ok: false, reason })
    for (const slot of s.slots) this.clearRestart(slot)
    for (const p of s.procs.values()) if (p.state !== 'draining') this.ask(p, reason)
    this.fx.push({ type: 'close-listeners' })
    this.fx.push({ type: 'kill-timer', ms: this.cfg.shutdownTimeout })
    if (s.reload.queued) {
      s.reload.queued = false
      this.fx.push({ type: 'reload-cancelled', pass: s.reload.pass + 1, reason: 'shutting down' })
    }
    if (s.procs.size === 0) this.finish()
  }

  finish (): void {
    if (this.s.finished) return
    this.s.finished = true
    this.fx.push({ type: 'clear-kill-timer' })
    this.fx.push({ type: 'finish', code: this.s.exitCode, killed: [...this.s.killed], exit: this.s.exitProcess })
  }

  /**
   * The one decision on a reload request, whoever asks: refused during a shutdown; else a pass
   * starts now, or (one already runs) exactly one more full pass is queued behind it, and every
   * further request joins that queued pass. So every slot ends on code at least as new as the
   * newest request.
   */
  requestReload (source: string): void {
    const reload = this.s.reload
    if (this.s.shutdown !== undefined) {
      this.log('warn', null, { source }, `reload (${source}) refused: the cluster is shutting down`)
      this.fx.push({ type: 'reload-answer', refused: 'shutting down' })
      return
    }
    if (!reload.running) {
      this.startPass()
    } else if (!reload.queued) {
      reload.queued = true
      this.log('info', null, { source, running: reload.pass }, `reload (${source}) queued: one more full pass after the running one`)
    } else {
      this.log('info', null, { source, running: reload.pass }, `reload (${source}) joins the pass already queued`)
    }
    this.fx.push({ type: 'reload-answer', pass: reload.running && reload.queued ? reload.pass + 1 : reload.pass })
  }

  startPass (): void {
    this.s.reload.pass += 1
    this.s.reload.running = true
    this.s.reload.queued = false
    this.fx.push({ type: 'reload', pass: this.s.reload.pass })
  }

  killAll (): void {
    for (const p of this.s.procs.values()) {
      this.s.killed.push({ workerId: p.slotId, pid: p.pid })
      this.fx.push({ type: 'kill', id: p.id, signal: 'SIGKILL' })
    }
  }

  candidateIn (slot: SlotState): boolean { return candidateIn(this.s, slot) }
}

export function candidateIn (s: MachineState, slot: SlotState): boolean {
  for (const p of s.procs.values()) if (p.slot === slot.key && p.candidate) return true
  return false
}
