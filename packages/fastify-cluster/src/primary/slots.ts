import cluster, { type Worker } from 'node:cluster'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { ExitReason, ShutdownEvent, SupervisorEvents } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { errors } from '../errors.js'
import { isWorkerMessage, message, WORKER_ENV, type HeartbeatMessage, type ShutdownMessage, type WorkerToPrimary } from '../messages.js'
import { requestLimit, type RssHold } from './policy.js'
import { createListenerKeeper } from '../balance.js'
import { initialState, newProc, step, type Effect, type MachineEvent, type MachineState, type ProcState, type Signal, type SlotState } from './transitions.js'

/**
 * The slot machine's shell: every process the primary runs, from fork to exit. The decisions are
 * in transitions.ts (`step(state, event) -> { state, effects }`, pure); this file turns node:cluster
 * callbacks, messages and timers into events and applies the effects (fork, send, kill, timers,
 * log, emit). The policies (rolling replacement, watchdog, recycling, scaling) drive it through
 * `fork`, `askToExit` and `kill`, and never fork or kill on their own.
 */

/**
 * A slot as the policies see it: its pure state (transitions.ts `SlotState`, read-only, always the
 * newest) plus the shell's handles. `current` is the serving process itself, not its worker id.
 */
export interface Slot extends Readonly<Omit<SlotState, 'current'>> {
  readonly current: Proc | undefined
  rssHold: RssHold
  readonly log: Logger
}

/**
 * A process as the policies see it: its pure state (transitions.ts `ProcState`, read-only, always
 * the newest) plus the shell's handles. `slot` is the slot itself, not its key; setting `exitAs`
 * asks the machine (an `exit-as` event).
 */
export interface Proc extends Readonly<Omit<ProcState, 'slot' | 'exitAs'>> {
  readonly worker: Worker
  readonly slot: Slot
  /** maxRequests + this worker's jitter. */
  readonly requestLimit: number
  /** Reported as the exit reason instead of the observed one (`recycle`, `hung`). */
  exitAs: ExitReason | undefined
  /** Being replaced by a recycle: do not queue it twice. */
  recycling: boolean
}

/**
 * A live view: the shell's own fields (`own`) first, then the newest pure state's (`current()`),
 * read-only: a policy never writes the machine's state, it sends the machine an event.
 */
function liveView<V extends object> (own: object, current: () => object): V {
  return new Proxy(own, {
    get: (target, key) => key in target ? Reflect.get(target, key) : Reflect.get(current(), key),
    has: (target, key) => key in target || key in current(),
    set: (target, key, value) => key in target && Reflect.set(target, key, value)
  }) as V
}

export type ShutdownReason = ShutdownEvent['reason']
export type Operation = Extract<Effect, { type: 'reload' | 'reload-cancelled' | 'scale' }>

export interface SlotMachine {
  readonly options: ResolvedOptions
  /** The monotonic clock of every liveness time (ms, not since the epoch). */
  readonly now: () => number
  readonly events: EventEmitter<SupervisorEvents>
  /** Cluster-wide logger (`workerId: null`). */
  readonly log: Logger
  /** Slots 0..n-1 (scaling pushes and pops). */
  readonly slots: Slot[]
  /** Every process still alive, by cluster worker id. */
  readonly procs: Map<number, Proc>
  readonly shuttingDown: boolean
  /** Restarts after unexpected exits, every slot together. */
  readonly restarts: number
  addSlot (): Slot
  /** Scale down: the slot is never forked into again (its workers are still to be retired). */
  retireSlot (slot: Slot): void
  removeSlot (slot: Slot): void
  /** Fork the slot's next generation; undefined once the shutdown began (no fork after that). */
  fork (slot: Slot, candidate?: boolean): Proc | undefined
  /** A replacement's candidate failed: fork into the slot if it was left empty (normal restart). */
  refill (slot: Slot): void
  countRestart (slot: Slot): void
  /** Ask a worker to drain and exit (`exitAs` is the reason its exit will carry). */
  askToExit (proc: Proc, reason: ShutdownMessage['reason'], exitAs?: ExitReason): void
  /** Resolves with 'ready' or, if the process exits first, its exit reason. */
  settled (proc: Proc): Promise<'ready' | ExitReason>
  onHeartbeat (fn: (proc: Proc, msg: HeartbeatMessage) => void): void
  onMessage (fn: (proc: Proc, msg: WorkerToPrimary) => void): void
  /** A reload pass to run (or a queued one cancelled by the shutdown), SIGTTIN / SIGTTOU's scale: as the machine decides. */
  onOperation (fn: (op: Operation) => void): void
  /** Ask for a rolling reload: the machine answers with the pass that will cover it, or a refusal. */
  requestReload (source?: string): { pass: number } | { refused: string }
  /** The replacer finished the running pass: the machine starts the queued one, if any. */
  reloadDone (): void
  /** A process signal: TERM / INT shut down (a second one: SIGKILL everyone), HUP / TTIN / TTOU operations. */
  signal (signal: Signal, desired: number): void
  shutdown (reason: ShutdownReason, signal?: NodeJS.Signals, exit?: boolean): Promise<number>
  onClose (fn: () => void | Promise<void>): void
  /** Called once after the last worker is gone, before `closed` (the supervisor removes its signal handlers). */
  onFinish (fn: () => void): void
  /** Exit code the shutdown will use; a fatal verdict sets it to 1. */
  fail (): void
  /** Resolves once every slot has been ready at least once. */
  ready (): Promise<void>
}

/**
 * Milliseconds on a monotonic clock (process.hrtime: the global `performance` would load perf_hooks
 * into the lean primary). Every liveness time (heartbeat ages, the watchdog, backoff and crash-loop
 * windows, RSS holds) is on it: a wall-clock step (NTP, a VM restore) must not make every worker
 * look silent for an hour and get it SIGKILLed as hung.
 */
export function monotonicNow (): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000
}

export function createSlotMachine (options: ResolvedOptions, now: () => number = monotonicNow): SlotMachine {
  const root = createLogger(options.logger, 'primary', options.logFormat)
  const log = root.child({ workerId: null })
  const events = new EventEmitter<SupervisorEvents>()
  const listeners = createListenerKeeper() // balance 'kernel': each slot's listening socket, handed down its generations
  const hooks = {
    beat: [] as Array<(proc: Proc, msg: HeartbeatMessage) => void>,
    message: [] as Array<(proc: Proc, msg: WorkerToPrimary) => void>,
    close: [] as Array<() => void | Promise<void>>,
    finish: [] as Array<() => void>,
    op: [] as Array<(op: Operation) => void>
  }
  let state: MachineState = initialState(options, options.workers)
  const slots: Slot[] = []
  const procs = new Map<number, Proc>()
  const slotViews = new Map<number, { view: Slot, d: SlotState }>()
  const procViews = new Map<number, { view: Proc, d: ProcState }>()
  const startTimers = new Map<number, NodeJS.Timeout>()
  const restartTimers = new Map<number, NodeJS.Timeout>()
  let killTimer: NodeJS.Timeout | undefined
  let readyWaiters: Array<{ resolve: () => void, reject: (err: Error) => void }> = []
  let resolveFinished: (code: number) => void = () => {}
  const finished = new Promise<number>((resolve) => { resolveFinished = resolve })
  let lastForked: Proc | undefined

  function slotView (d: SlotState): { view: Slot, d: SlotState } {
    const entry = { d, view: undefined as unknown as Slot }
    const own = {
      get current () { return entry.d.current === undefined ? undefined : procs.get(entry.d.current) },
      rssHold: { until: 0, delay: 0 },
      log: root.child({ workerId: d.id })
    }
    entry.view = liveView<Slot>(own, () => entry.d)
    return entry
  }

  function procView (worker: Worker, slot: Slot, d: ProcState): { view: Proc, d: ProcState } {
    const entry = { d, view: undefined as unknown as Proc }
    const own = {
      worker,
      slot,
      requestLimit: requestLimit(options.maxRequests, options.maxRequestsJitter),
      recycling: false,
      get exitAs () { return entry.d.exitAs },
      set exitAs (exitAs: ExitReason | undefined) { if (exitAs !== undefined) dispatch({ type: 'exit-as', id: worker.id, exitAs }) }
    }
    entry.view = liveView<Proc>(own, () => entry.d)
    return entry
  }

  /** Keep the views (and the `slots` / `procs` the policies read) in step with the new state. */
  function sync (): void {
    for (const d of state.slots) {
      const e = slotViews.get(d.key)
      if (e === undefined) slotViews.set(d.key, slotView(d))
      else e.d = d
    }
    // Removed slots keep their view (and logger) for the processes still draining there.
    for (const e of slotViews.values()) if (!e.d.removed && !state.slots.includes(e.d)) e.d = { ...e.d, removed: true }
    slots.splice(0, slots.length, ...state.slots.map((d) => (slotViews.get(d.key) as { view: Slot }).view))
    for (const [id, e] of procViews) {
      const d = state.procs.get(id)
      if (d !== undefined) e.d = d
      else { e.d = { ...e.d, state: 'stopped' }; procViews.delete(id); procs.delete(id) }
    }
  }

  function dispatch (event: MachineEvent): Effect[] {
    const next = step(state, event)
    state = next.state
    sync()
    for (const effect of next.effects) apply(effect)
    return next.effects
  }

  const slotLog = (key: number | null): Logger => key === null ? log : (slotViews.get(key)?.view.log ?? log)
  const workerOf = (id: number): Worker | undefined => procViews.get(id)?.view.worker

  function apply (fx: Effect): void {
    switch (fx.type) {
      case 'fork': return spawn(fx.slot, fx.slotId, fx.generation, fx.workers, fx.candidate)
      case 'ask': {
        const worker = workerOf(fx.id)
        if (worker === undefined) return
        // Still starting: it has no requests to finish, and may not listen to messages yet.
        if (fx.starting || !worker.isConnected()) worker.process.kill('SIGTERM')
        else worker.send(message<ShutdownMessage>({ type: 'shutdown', deadline: fx.deadline, reason: fx.reason }), () => {})
        return
      }
      case 'kill': workerOf(fx.id)?.process.kill(fx.signal); return
      case 'start-timer': startTimers.set(fx.id, setTimeout(() => dispatch({ type: 'start-timeout', id: fx.id }), fx.ms)); return
      case 'clear-start-timer': clearTimeout(startTimers.get(fx.id)); startTimers.delete(fx.id); return
      case 'restart-timer':
        restartTimers.set(fx.slot, setTimeout(() => { restartTimers.delete(fx.slot); dispatch({ type: 'restart-due', slot: fx.slot, at: now() }) }, fx.ms))
        return
      case 'clear-restart-timer': clearTimeout(restartTimers.get(fx.slot)); restartTimers.delete(fx.slot); return
      case 'kill-timer': killTimer = setTimeout(() => dispatch({ type: 'kill-timer' }), fx.ms); return
      case 'clear-kill-timer': clearTimeout(killTimer); return
      case 'log': slotLog(fx.slot)[fx.level](fx.fields, fx.msg); return
      case 'emit': (events.emit as (name: string, payload: unknown) => boolean)(fx.name, fx.payload); return
      case 'close-listener': listeners.close(fx.slotId); return
      case 'close-listeners': listeners.closeAll(); return // kernel balancing: the slot sockets close with the workers' own copies
      case 'ready-waiters': {
        const waiters = readyWaiters
        readyWaiters = []
        for (const w of waiters) fx.ok ? w.resolve() : w.reject(new errors.NCLUST_CLUSTER_SHUTDOWN(fx.reason))
        return
      }
      case 'finish': return finish(fx.code, fx.killed, fx.exit)
      case 'reload':
      case 'reload-cancelled':
      case 'scale':
        for (const fn of hooks.op) fn(fx)
        break
      case 'reload-answer': break // read by requestReload
      case 'force-close': forceClose(); break
    }
  }

  function spawn (key: number, slotId: number, generation: number, workers: number, candidate: boolean): void {
    const slot = slotViews.get(key)?.view
    if (slot === undefined) return
    const worker = cluster.fork({
      [WORKER_ENV.id]: String(slotId),
      [WORKER_ENV.generation]: String(generation),
      [WORKER_ENV.workers]: String(workers)
    })
    const pid = worker.process.pid ?? -1
    // The view exists before the `forked` event so that its effects (logs, the start timer) can find it.
    const placeholder = newProc({ key, id: slotId, generation }, { id: worker.id, pid, candidate, at: now() })
    const entry = procView(worker, slot, placeholder)
    procViews.set(worker.id, entry)
    procs.set(worker.id, entry.view)
    lastForked = entry.view
    worker.on('message', (raw: unknown, handle: unknown) => {
      if (!isWorkerMessage(raw)) return
      if (raw.type === 'listener') listeners.onMessage(slotId, worker, raw, handle)
      else onMessage(entry.view, raw)
    })
    worker.on('error', (err) => { slot.log.debug({ err, workerPid: pid }, 'worker channel error') })
    worker.on('exit', (code, signal) => dispatch({ type: 'exit', id: worker.id, code, signal: signal as NodeJS.Signals | null, at: now() }))
    dispatch({ type: 'forked', slot: key, id: worker.id, pid, candidate, at: placeholder.startedAt })
  }

  function onMessage (proc: Proc, msg: WorkerToPrimary): void {
    const id = proc.worker.id
    switch (msg.type) {
      case 'ready': dispatch({ type: 'ready', id, at: now() }); return
      case 'fatal': dispatch({ type: 'fatal', id, reason: msg.reason, message: msg.message, ...(msg.stack !== undefined ? { stack: msg.stack } : {}) }); return
      case 'heartbeat':
        dispatch({ type: 'heartbeat', id, at: now(), requests: msg.requests, rss: msg.rss, ...(msg.cpu !== undefined ? { cpu: msg.cpu } : {}), ...(msg.elu !== undefined ? { elu: msg.elu } : {}) })
        for (const fn of hooks.beat) fn(proc, msg)
        return
      default:
        for (const fn of hooks.message) fn(proc, msg)
    }
  }

  /** Ends the wait for the close hooks (a second signal): set while they run. */
  let forceClose: () => void = () => {}

  function finish (code: number, killed: Array<{ workerId: number, pid: number }>, exit: boolean): void {
    void (async () => {
      const outcome = await runCloseHooks(hooks.close, options.shutdownTimeout, log, (force) => { forceClose = force })
      if (outcome !== 'done') code = 1
      for (const fn of hooks.finish) fn()
      log.info({ code, killed }, killed.length > 0
        ? `cluster stopped; SIGKILLed: ${killed.map((k) => `worker ${k.workerId} (pid ${k.pid})`).join(', ')}`
        : 'cluster stopped: every worker exited')
      events.emit('closed', { code, killed })
      resolveFinished(code)
      if (exit) void finished.then((c) => process.exit(c))
    })()
  }

  function fork (slot: Slot, candidate = false): Proc | undefined {
    lastForked = undefined
    dispatch({ type: 'fork', slot: slot.key, candidate })
    return lastForked
  }

  const settled = settler(events)

  sync()
  return {
    options,
    now,
    events,
    log,
    slots,
    procs,
    get shuttingDown () { return state.shutdown !== undefined },
    get restarts () { return state.restarts },
    addSlot () {
      dispatch({ type: 'add-slot' })
      return slots[slots.length - 1] as Slot
    },
    retireSlot (slot) { dispatch({ type: 'retire-slot', slot: slot.key }) },
    removeSlot (slot) { dispatch({ type: 'remove-slot', slot: slot.key }) },
    fork,
    refill (slot) { dispatch({ type: 'refill', slot: slot.key }) },
    countRestart (slot) { dispatch({ type: 'count-restart', slot: slot.key }) },
    askToExit (proc, reason, exitAs) { dispatch({ type: 'ask', id: proc.worker.id, reason, ...(exitAs !== undefined ? { exitAs } : {}) }) },
    settled,
    onHeartbeat (fn) { hooks.beat.push(fn) },
    onMessage (fn) { hooks.message.push(fn) },
    onOperation (fn) { hooks.op.push(fn) },
    requestReload (source) {
      const answer = dispatch({ type: 'reload-request', ...(source !== undefined ? { source } : {}) }).find((fx) => fx.type === 'reload-answer')
      if (answer === undefined || 'refused' in answer) return { refused: answer?.refused ?? 'refused' }
      return { pass: answer.pass }
    },
    reloadDone () { dispatch({ type: 'reload-done' }) },
    signal (signal, desired) { dispatch({ type: 'signal', signal, desired }) },
    shutdown (reason, signal, exit = false) {
      dispatch({ type: 'shutdown', reason, ...(signal !== undefined ? { signal } : {}), exit })
      return finished
    },
    onClose (fn) { hooks.close.push(fn) },
    onFinish (fn) { hooks.finish.push(fn) },
    fail () { dispatch({ type: 'fail' }) },
    ready () {
      if (state.slots.every((s) => s.everReady)) return Promise.resolve()
      if (state.shutdown !== undefined) return Promise.reject(new errors.NCLUST_CLUSTER_SHUTDOWN('already shutting down'))
      return new Promise<void>((resolve, reject) => { readyWaiters.push({ resolve, reject }) })
    }
  }
}

/**
 * The close hooks, in order, given the shutdown deadline together: one that never settles must not
 * keep the primary alive forever; `setForce` receives the function a second SIGTERM / SIGINT calls
 * to stop the wait at once. 'done', or why the wait was cut (then the caller exits 1).
 */
async function runCloseHooks (hooks: Array<() => void | Promise<void>>, timeoutMs: number, log: Logger, setForce: (force: () => void) => void): Promise<'done' | 'timeout' | 'forced'> {
  let timer: NodeJS.Timeout | undefined
  const cut = new Promise<'timeout' | 'forced'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs)
    setForce(() => resolve('forced'))
  })
  const hooksDone = (async () => {
    for (const hook of hooks) {
      try { await hook() } catch (err) { log.error({ err }, 'onClose hook failed') }
    }
    return 'done' as const
  })()
  const outcome = await Promise.race([hooksDone, cut])
  clearTimeout(timer)
  if (outcome !== 'done') {
    log.error({ shutdownTimeout: timeoutMs, outcome }, outcome === 'forced'
      ? 'second signal: not waiting for the onClose hooks any longer'
      : `onClose hooks not settled within ${timeoutMs}ms: stopping without them`)
  }
  return outcome
}

/**
 * `settled(proc)`: resolves with 'ready' or, if the process exits first, its exit reason. Waiters by
 * pid: two listeners for the whole machine, not two per waiting process (a scale up by 8 used to
 * add 16 and print MaxListenersExceededWarning).
 */
function settler (events: EventEmitter<SupervisorEvents>): (proc: Proc) => Promise<'ready' | ExitReason> {
  const waiters = new Map<number, Array<(outcome: 'ready' | ExitReason) => void>>()
  const settle = (pid: number, outcome: 'ready' | ExitReason): void => {
    const list = waiters.get(pid)
    waiters.delete(pid)
    for (const fn of list ?? []) fn(outcome)
  }
  events.on('worker-ready', (e) => settle(e.pid, 'ready'))
  events.on('worker-exit', (e) => settle(e.pid, e.reason))
  return (proc) => {
    if (proc.state === 'ready') return Promise.resolve('ready')
    return new Promise((resolve) => {
      const list = waiters.get(proc.pid) ?? []
      list.push(resolve)
      waiters.set(proc.pid, list)
    })
  }
}
