import cluster, { type Worker } from 'node:cluster'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { ExitReason, ShutdownEvent, SupervisorEvents, WorkerState } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { errors } from '../errors.js'
import { isWorkerMessage, message, WORKER_ENV, type HeartbeatMessage, type ShutdownMessage, type WorkerToPrimary } from '../messages.js'
import { consecutiveFailures, crashLoopTripped, recordFailure, restartDelay } from './backoff.js'
import { requestLimit, startGivesUp, type RssHold } from './policy.js'
import { createListenerKeeper } from '../balance.js'

/**
 * The slot machine: every process the primary runs, from fork to exit. All the state is here;
 * the policies (rolling replacement, watchdog, recycling, scaling) drive it through `fork`,
 * `askToExit` and `kill`, and never fork or kill on their own.
 *
 *   fork(slot) ─► starting ──ready msg──► ready ──askToExit──► draining ──exit──► stopped
 *                    │                      │
 *                    │                      └──exit (crash, signal, hung) ─► backoff ─► fork(slot), generation+1
 *                    │                                                  └─ crash loop ─► shut down, exit 1
 *                    └──exit / start timeout, slot never ready ─► retry (startRetries) ─► start verdict: shut down, exit 1
 *
 * A *candidate* (forked by a replacement or a scale-up) takes its slot only once ready; if it dies
 * first, nothing restarts it: the policy that forked it reports the failure.
 */

export interface Slot {
  id: number
  /** Generation of the newest fork into this slot. */
  generation: number
  /** Replacements after unexpected exits. */
  restarts: number
  /** Unexpected exits in a row (reset by a long enough uptime): drives the backoff. */
  consecutive: number
  /** Times of unexpected exits inside the crash-loop window. */
  failures: number[]
  /** Failed starts while the slot has never been ready: drives the start verdict. */
  startFailures: number
  current: Proc | undefined
  restartTimer: NodeJS.Timeout | undefined
  everReady: boolean
  /** Removed by a scale-down: never forked into again. */
  removed: boolean
  rssHold: RssHold
  log: Logger
}

export interface Proc {
  worker: Worker
  pid: number
  slot: Slot
  generation: number
  state: WorkerState
  startedAt: number
  readyAt: number | undefined
  /** Last heartbeat (or ready) time, and what it said. */
  lastBeat: number
  requests: number
  rss: number
  /** maxRequests + this worker's jitter. */
  requestLimit: number
  /** The primary asked this worker to exit: its exit is never replaced by the backoff path. */
  requested: boolean
  /** Reported as the exit reason instead of the observed one (`recycle`, `hung`). */
  exitAs: ExitReason | undefined
  startTimedOut: boolean
  /** Not ready yet and not the slot's worker: the slot's old worker (if any) still serves. */
  candidate: boolean
  /** Being replaced by a recycle: do not queue it twice. */
  recycling: boolean
  /** Last fatal error the worker reported before dying. */
  fatal: string | undefined
  fatalStack: string | undefined
  startTimer: NodeJS.Timeout | undefined
}

export type ShutdownReason = ShutdownEvent['reason']

export interface SlotMachine {
  readonly options: ResolvedOptions
  readonly now: () => number
  readonly events: EventEmitter<SupervisorEvents>
  /** Cluster-wide logger (`workerId: null`). */
  readonly log: Logger
  /** Slots 0..n-1 (scaling pushes and pops). */
  readonly slots: Slot[]
  /** Every process still alive, by cluster worker id. */
  readonly procs: Map<number, Proc>
  readonly shuttingDown: boolean
  addSlot (): Slot
  removeSlot (slot: Slot): void
  fork (slot: Slot, candidate?: boolean): Proc
  /** Ask a worker to drain and exit (`exitAs` is the reason its exit will carry). */
  askToExit (proc: Proc, reason: ShutdownMessage['reason'], exitAs?: ExitReason): void
  /** Resolves with 'ready' or, if the process exits first, its exit reason. */
  settled (proc: Proc): Promise<'ready' | ExitReason>
  onHeartbeat (fn: (proc: Proc, msg: HeartbeatMessage) => void): void
  onMessage (fn: (proc: Proc, msg: WorkerToPrimary) => void): void
  shutdown (reason: ShutdownReason, signal?: NodeJS.Signals): Promise<number>
  /** A second signal during shutdown: SIGKILL everyone now. */
  force (signal: NodeJS.Signals): void
  onClose (fn: () => void | Promise<void>): void
  /** Called once after the last worker is gone, before `closed` (the supervisor removes its signal handlers). */
  onFinish (fn: () => void): void
  /** Exit code the shutdown will use; a fatal verdict sets it to 1. */
  fail (): void
  /** Resolves once every slot has been ready at least once. */
  ready (): Promise<void>
}

export function createSlotMachine (options: ResolvedOptions, now: () => number = Date.now): SlotMachine {
  const root = createLogger(options.logger, 'primary', options.logFormat)
  const log = root.child({ workerId: null })
  const events = new EventEmitter<SupervisorEvents>()
  const procs = new Map<number, Proc>()
  const slots: Slot[] = []
  const beatHooks: Array<(proc: Proc, msg: HeartbeatMessage) => void> = []
  const messageHooks: Array<(proc: Proc, msg: WorkerToPrimary) => void> = []
  const closeHooks: Array<() => void | Promise<void>> = []
  const listeners = createListenerKeeper() // balance 'kernel': each slot's listening socket, handed down its generations
  const finishHooks: Array<() => void> = []
  let shuttingDown: Promise<number> | undefined
  let exitCode = 0
  let killTimer: NodeJS.Timeout | undefined
  let resolveFinished: ((code: number) => void) | undefined
  const killed: Array<{ workerId: number, pid: number }> = []
  let readyWaiters: Array<{ resolve: () => void, reject: (err: Error) => void }> = []

  function addSlot (): Slot {
    const id = slots.length
    const slot: Slot = {
      id,
      generation: -1,
      restarts: 0,
      consecutive: 0,
      failures: [],
      startFailures: 0,
      current: undefined,
      restartTimer: undefined,
      everReady: false,
      removed: false,
      rssHold: { until: 0, delay: 0 },
      log: root.child({ workerId: id })
    }
    slots.push(slot)
    return slot
  }

  function removeSlot (slot: Slot): void {
    clearTimeout(slot.restartTimer)
    slot.restartTimer = undefined
    slot.removed = true
    listeners.close(slot.id) // kernel balancing: a socket nobody accepts on would hold connections forever
    const i = slots.indexOf(slot)
    if (i >= 0) slots.splice(i, 1)
    resolveReadyWaiters()
  }

  function transition (proc: Proc, to: WorkerState): void {
    const from = proc.state
    proc.state = to
    proc.slot.log.debug({ workerPid: proc.pid, generation: proc.generation, from, to }, 'worker state')
    events.emit('state', { workerId: proc.slot.id, pid: proc.pid, generation: proc.generation, from, to })
  }

  // ── fork ──────────────────────────────────────────────────────────────────────────────────
  function fork (slot: Slot, candidate = false): Proc {
    clearTimeout(slot.restartTimer)
    slot.restartTimer = undefined
    slot.generation += 1
    const worker = cluster.fork({
      [WORKER_ENV.id]: String(slot.id),
      [WORKER_ENV.generation]: String(slot.generation),
      [WORKER_ENV.workers]: String(slots.length)
    })
    const at = now()
    const proc: Proc = {
      worker,
      pid: worker.process.pid ?? -1,
      slot,
      generation: slot.generation,
      state: 'starting',
      startedAt: at,
      readyAt: undefined,
      lastBeat: at,
      requests: 0,
      rss: 0,
      requestLimit: requestLimit(options.maxRequests, options.maxRequestsJitter),
      requested: false,
      exitAs: undefined,
      startTimedOut: false,
      candidate,
      recycling: false,
      fatal: undefined,
      fatalStack: undefined,
      startTimer: undefined
    }
    procs.set(worker.id, proc)
    if (!candidate) slot.current = proc
    slot.log.info({ workerPid: proc.pid, generation: proc.generation, candidate }, 'worker forked')
    events.emit('state', { workerId: slot.id, pid: proc.pid, generation: proc.generation, from: null, to: 'starting' })

    proc.startTimer = setTimeout(() => {
      if (proc.state !== 'starting') return
      proc.startTimedOut = true
      slot.log.error({ workerPid: proc.pid, startTimeout: options.startTimeout }, `worker not ready within ${options.startTimeout}ms: killing it`)
      proc.worker.process.kill('SIGKILL')
    }, options.startTimeout)

    worker.on('message', (raw: unknown, handle: unknown) => {
      if (!isWorkerMessage(raw)) return
      if (raw.type === 'listener') listeners.onMessage(slot.id, worker, raw, handle)
      else onMessage(proc, raw)
    })
    worker.on('error', (err) => { slot.log.debug({ err, workerPid: proc.pid }, 'worker channel error') })
    worker.on('exit', (code, signal) => onExit(proc, code, signal as NodeJS.Signals | null))
    return proc
  }

  // ── messages from a worker ────────────────────────────────────────────────────────────────
  function onMessage (proc: Proc, msg: WorkerToPrimary): void {
    switch (msg.type) {
      case 'ready': return onReady(proc)
      case 'fatal':
        proc.fatal = msg.message
        proc.fatalStack = msg.stack
        // A failed start is reported once per try at the exit, and with its stack once at the verdict.
        if (msg.reason !== 'startFailed') {
          proc.slot.log.error({ workerPid: proc.pid, reason: msg.reason, error: msg.message }, 'worker reported a fatal error')
        }
        return
      case 'heartbeat':
        proc.lastBeat = now()
        proc.requests = msg.requests
        proc.rss = msg.rss
        for (const fn of beatHooks) fn(proc, msg)
        return
      default:
        for (const fn of messageHooks) fn(proc, msg)
    }
  }

  function onReady (proc: Proc): void {
    if (proc.state !== 'starting') return
    clearTimeout(proc.startTimer)
    proc.readyAt = now()
    proc.lastBeat = proc.readyAt
    const slot = proc.slot
    if (proc.candidate) {
      // A replacement's new generation takes over the slot; the replacement drains the old worker.
      proc.candidate = false
      clearTimeout(slot.restartTimer)
      slot.restartTimer = undefined
      slot.current = proc
    }
    transition(proc, 'ready')
    const startMs = proc.readyAt - proc.startedAt
    slot.log.info({ workerPid: proc.pid, generation: proc.generation, startMs }, 'worker ready')
    events.emit('worker-ready', { workerId: slot.id, pid: proc.pid, generation: proc.generation, startMs })
    if (shuttingDown !== undefined) {
      askToExit(proc, 'close') // became ready after the shutdown began: it must drain too
      return
    }
    slot.everReady = true
    slot.startFailures = 0
    resolveReadyWaiters()
  }

  function resolveReadyWaiters (): void {
    if (!slots.every((s) => s.everReady)) return
    for (const w of readyWaiters) w.resolve()
    readyWaiters = []
  }

  // ── exits, backoff, crash-loop guard, start verdict ───────────────────────────────────────
  function exitReason (proc: Proc, signal: NodeJS.Signals | null): ExitReason {
    if (proc.exitAs !== undefined) return proc.exitAs
    if (proc.requested) return 'requested'
    if (proc.startTimedOut) return 'start-timeout'
    if (proc.readyAt === undefined) return 'start-failed'
    return signal !== null ? 'signal' : 'crash'
  }

  function onExit (proc: Proc, code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(proc.startTimer)
    procs.delete(proc.worker.id)
    const slot = proc.slot
    if (slot.current === proc) slot.current = undefined
    const reason = exitReason(proc, signal)
    transition(proc, 'stopped')
    const startFailure = !slot.everReady && !proc.requested && (reason === 'start-failed' || reason === 'start-timeout')
    const line = { workerPid: proc.pid, generation: proc.generation, code, signal, reason, error: proc.fatal }
    if (reason === 'requested' || reason === 'recycle') slot.log.info(line, 'worker exited')
    else if (!startFailure || proc.candidate || shuttingDown !== undefined) slot.log.error(line, 'worker exited unexpectedly')
    events.emit('worker-exit', {
      workerId: slot.id,
      pid: proc.pid,
      generation: proc.generation,
      code,
      signal,
      reason,
      ...(proc.fatal !== undefined ? { error: proc.fatal } : {})
    })

    // The shutdown branch comes first, whoever exits: when the last process to go is a candidate
    // (a reload or scale-up interrupted by SIGTERM), it is the one that must finish the shutdown.
    if (shuttingDown !== undefined) {
      // A worker that could not close cleanly makes the whole shutdown unclean; a worker still
      // starting that we SIGTERMed may die of it before it installs its handler: that is clean.
      const termedWhileStarting = proc.requested && proc.readyAt === undefined && signal === 'SIGTERM'
      if ((code !== 0 && code !== null) || (signal !== null && !termedWhileStarting)) exitCode = 1
      if (procs.size === 0) finish()
      return
    }
    if (proc.candidate) return // the policy that forked it reports the failure; the old worker serves on
    if (proc.requested || slot.removed) return
    if (startFailure) return startFailed(slot, proc, reason, code, signal)

    const at = now()
    slot.failures = recordFailure(slot.failures, at, options.crashLoop)
    if (crashLoopTripped(slot.failures, options.crashLoop)) {
      exitCode = 1
      const detail = { workerId: slot.id, failures: slot.failures.length, windowMs: options.crashLoop.window, lastCode: code, lastSignal: signal }
      slot.log.fatal({ ...detail, lastReason: reason, lastError: proc.fatal },
        `crash loop: worker ${slot.id} failed ${slot.failures.length} times within ${options.crashLoop.window}ms ` +
        `(last exit: ${signal ?? `code ${String(code)}`}, ${reason}${proc.fatal !== undefined ? `: ${proc.fatal}` : ''}); ` +
        'stopping the other workers and exiting 1')
      events.emit('crash-loop', detail)
      void shutdown('crash-loop').then((c) => { if (options.handleSignals) process.exit(c) })
      return
    }
    slot.consecutive = consecutiveFailures(slot.consecutive, proc.readyAt, at, options.restartBackoff)
    const delay = restartDelay(slot.consecutive - 1, options.restartBackoff)
    slot.log.warn({ attempt: slot.consecutive, delay, reason }, `restarting worker ${slot.id} in ${delay}ms`)
    scheduleRestart(slot, delay, slot.consecutive, reason)
  }

  function scheduleRestart (slot: Slot, delay: number, attempt: number, reason: ExitReason): void {
    slot.restarts += 1
    events.emit('restart', { workerId: slot.id, attempt, delay, reason })
    slot.restartTimer = setTimeout(() => {
      // A replacement's candidate may already be on its way into this slot.
      const candidate = [...procs.values()].some((p) => p.slot === slot && p.candidate)
      if (slot.current === undefined && !candidate && !slot.removed && shuttingDown === undefined) fork(slot)
    }, delay)
  }

  /** A slot that has never been ready failed to start: retry a few times, then stop everything. */
  function startFailed (slot: Slot, proc: Proc, reason: ExitReason, code: number | null, signal: NodeJS.Signals | null): void {
    slot.startFailures += 1
    const tries = options.startRetries + 1
    const error = proc.fatal ?? (reason === 'start-timeout' ? `not ready within ${options.startTimeout}ms` : 'exited before ready')
    if (!startGivesUp(slot.startFailures, options.startRetries)) {
      const delay = restartDelay(slot.startFailures - 1, options.restartBackoff)
      slot.log.warn({ workerPid: proc.pid, generation: proc.generation, reason, code, signal, try: slot.startFailures, tries, delay, error },
        `worker ${slot.id} did not start (try ${slot.startFailures} of ${tries}, ${reason}): ${error}; retrying in ${delay}ms`)
      scheduleRestart(slot, delay, slot.startFailures, reason)
      return
    }
    exitCode = 1
    const err = new Error(error)
    err.stack = proc.fatalStack ?? `Error: ${error} (no stack: the worker sent none)`
    slot.log.fatal({ reason, tries, err },
      `worker ${slot.id} could not start (${tries} tries, ${reason}): ${error}; stopping the cluster, exit 1`)
    events.emit('start-failed', { workerId: slot.id, tries, reason, error, ...(proc.fatalStack !== undefined ? { stack: proc.fatalStack } : {}) })
    void shutdown('start-failed').then((c) => { if (options.handleSignals) process.exit(c) })
  }

  // ── shutdown ──────────────────────────────────────────────────────────────────────────────
  function askToExit (proc: Proc, reason: ShutdownMessage['reason'], exitAs?: ExitReason): void {
    proc.requested = true
    if (exitAs !== undefined) proc.exitAs = exitAs
    if (proc.state !== 'draining') transition(proc, 'draining')
    if (proc.readyAt === undefined || !proc.worker.isConnected()) {
      // Still starting: it has no requests to finish, and may not listen to messages yet.
      proc.worker.process.kill('SIGTERM')
      return
    }
    proc.worker.send(message<ShutdownMessage>({ type: 'shutdown', deadline: options.shutdownTimeout, reason }), () => {})
  }

  function shutdown (reason: ShutdownReason, signal?: NodeJS.Signals): Promise<number> {
    if (shuttingDown !== undefined) return shuttingDown
    shuttingDown = new Promise<number>((resolve) => { resolveFinished = resolve })
    log.info({ reason, signal, workers: procs.size, shutdownTimeout: options.shutdownTimeout }, 'shutting down: draining every worker')
    events.emit('shutdown', { reason, ...(signal !== undefined ? { signal } : {}) })
    for (const w of readyWaiters) w.reject(new errors.NCLUST_SHUTDOWN(reason))
    readyWaiters = []
    for (const slot of slots) clearTimeout(slot.restartTimer)
    for (const proc of procs.values()) if (proc.state !== 'draining') askToExit(proc, reason)
    listeners.closeAll() // kernel balancing: the slot sockets close with the workers' own copies
    killTimer = setTimeout(() => {
      for (const proc of procs.values()) {
        killed.push({ workerId: proc.slot.id, pid: proc.pid })
        proc.slot.log.error({ workerPid: proc.pid, shutdownTimeout: options.shutdownTimeout },
          `worker ${proc.slot.id} (pid ${proc.pid}) still alive after ${options.shutdownTimeout}ms: SIGKILL`)
        proc.worker.process.kill('SIGKILL')
      }
      exitCode = 1
    }, options.shutdownTimeout)
    if (procs.size === 0) finish()
    return shuttingDown
  }

  function force (signal: NodeJS.Signals): void {
    log.warn({ signal, workers: procs.size }, 'second signal during shutdown: killing every worker now')
    exitCode = 1
    for (const proc of procs.values()) {
      killed.push({ workerId: proc.slot.id, pid: proc.pid })
      proc.worker.process.kill('SIGKILL')
    }
  }

  function finish (): void {
    clearTimeout(killTimer)
    const code = exitCode
    void (async () => {
      for (const hook of closeHooks) {
        try { await hook() } catch (err) { log.error({ err }, 'onClose hook failed') }
      }
      for (const fn of finishHooks) fn()
      log.info({ code, killed }, killed.length > 0
        ? `cluster stopped; SIGKILLed: ${killed.map((k) => `worker ${k.workerId} (pid ${k.pid})`).join(', ')}`
        : 'cluster stopped: every worker exited')
      events.emit('closed', { code, killed })
      resolveFinished?.(code)
    })()
  }

  function settled (proc: Proc): Promise<'ready' | ExitReason> {
    if (proc.state === 'ready') return Promise.resolve('ready')
    return new Promise((resolve) => {
      const onReadyEvent = (e: { pid: number }): void => { if (e.pid === proc.pid) done('ready') }
      const onExitEvent = (e: { pid: number, reason: ExitReason }): void => { if (e.pid === proc.pid) done(e.reason) }
      function done (outcome: 'ready' | ExitReason): void {
        events.off('worker-ready', onReadyEvent)
        events.off('worker-exit', onExitEvent)
        resolve(outcome)
      }
      events.on('worker-ready', onReadyEvent)
      events.on('worker-exit', onExitEvent)
    })
  }

  for (let i = 0; i < options.workers; i++) addSlot()

  return {
    options,
    now,
    events,
    log,
    slots,
    procs,
    get shuttingDown () { return shuttingDown !== undefined },
    addSlot,
    removeSlot,
    fork,
    askToExit,
    settled,
    onHeartbeat (fn) { beatHooks.push(fn) },
    onMessage (fn) { messageHooks.push(fn) },
    shutdown,
    force,
    onClose (fn) { closeHooks.push(fn) },
    onFinish (fn) { finishHooks.push(fn) },
    fail () { exitCode = 1 },
    ready () {
      if (slots.every((s) => s.everReady)) return Promise.resolve()
      if (shuttingDown !== undefined) return Promise.reject(new errors.NCLUST_SHUTDOWN('already shutting down'))
      return new Promise<void>((resolve, reject) => { readyWaiters.push({ resolve, reject }) })
    }
  }
}
