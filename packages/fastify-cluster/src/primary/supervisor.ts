import cluster, { type Worker } from 'node:cluster'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type {
  ExitReason, PrimaryHandle, ReloadResult, RequestOptions, RequestResult, SupervisorEvents, WorkerInfo, WorkerState
} from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { errors } from '../errors.js'
import { isWorkerMessage, message, WORKER_ENV, type RequestMessage, type ShutdownMessage, type WorkerToPrimary } from '../messages.js'
import { consecutiveFailures, crashLoopTripped, recordFailure, restartDelay } from './backoff.js'

/**
 * The primary's state machine, top to bottom:
 *
 *   fork(slot) ─► starting ──ready msg──► ready ──shutdown/reload──► draining ──exit──► stopped
 *                    │                      │
 *                    └──exit / start timeout┴──(not requested)──► backoff ─► fork(slot), generation+1
 *                                                                   └─ too many in the window ─► crash loop: shut down, exit 1
 *
 * A reload forks a slot's next generation as a *candidate* beside the serving worker; only once the
 * candidate is ready does it become the slot's worker and the old one drain. A candidate that dies
 * before ready fails the reload (no backoff, no crash-loop count): the old worker keeps serving.
 *
 * A slot is a stable worker id 0..n-1; each fork into it is a new generation. Every transition is
 * logged and emitted as a `state` event. The primary never builds the app and never listens.
 */

interface Slot {
  id: number
  /** Generation of the newest fork into this slot. */
  generation: number
  /** Replacements after unexpected exits. */
  restarts: number
  /** Unexpected exits in a row (reset by a long enough uptime): drives the backoff. */
  consecutive: number
  /** Times of unexpected exits inside the crash-loop window. */
  failures: number[]
  current: Proc | undefined
  restartTimer: NodeJS.Timeout | undefined
  everReady: boolean
  log: Logger
}

interface Proc {
  worker: Worker
  pid: number
  slot: Slot
  generation: number
  state: WorkerState
  startedAt: number
  readyAt: number | undefined
  /** The primary asked this worker to exit: its exit is never replaced. */
  requested: boolean
  startTimedOut: boolean
  /** Forked by a reload and not ready yet: the slot's old worker still serves. */
  candidate: boolean
  /** Last fatal error the worker reported before dying. */
  fatal: string | undefined
  startTimer: NodeJS.Timeout | undefined
}

interface Pending {
  proc: Proc
  channel: string
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

export function startSupervisor (options: ResolvedOptions, now: () => number = Date.now): PrimaryHandle {
  const root = createLogger(options.logger, 'primary', options.logFormat)
  const log = root.child({ workerId: null })
  const events = new EventEmitter<SupervisorEvents>()
  const procs = new Map<number, Proc>() // by cluster worker id: every process still alive
  const slots: Slot[] = Array.from({ length: options.workers }, (_, id) => ({
    id,
    generation: -1,
    restarts: 0,
    consecutive: 0,
    failures: [],
    current: undefined,
    restartTimer: undefined,
    everReady: false,
    log: root.child({ workerId: id })
  }))
  const pending = new Map<number, Pending>()
  const closeHooks: Array<() => void | Promise<void>> = []
  let nextRequestId = 1
  let shuttingDown: Promise<number> | undefined
  let exitCode = 0
  let killTimer: NodeJS.Timeout | undefined
  let resolveFinished: ((code: number) => void) | undefined
  let reloading: Promise<ReloadResult> | undefined
  const killed: Array<{ workerId: number, pid: number }> = []
  let readyWaiters: Array<{ resolve: () => void, reject: (err: Error) => void }> = []

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
      [WORKER_ENV.workers]: String(options.workers)
    })
    const proc: Proc = {
      worker,
      pid: worker.process.pid ?? -1,
      slot,
      generation: slot.generation,
      state: 'starting',
      startedAt: now(),
      readyAt: undefined,
      requested: false,
      startTimedOut: false,
      candidate,
      fatal: undefined,
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

    worker.on('message', (raw: unknown) => { if (isWorkerMessage(raw)) onMessage(proc, raw) })
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
        proc.slot.log.error({ workerPid: proc.pid, reason: msg.reason, error: msg.message }, 'worker reported a fatal error')
        return
      case 'reply': {
        const p = pending.get(msg.id)
        if (p === undefined || p.proc !== proc) return
        pending.delete(msg.id)
        clearTimeout(p.timer)
        if (msg.ok) p.resolve(msg.payload)
        else p.reject(new errors.NCLUST_REQUEST_FAILED(proc.slot.id, p.channel, msg.error ?? 'unknown error'))
        break
      }
      default:
        // 'heartbeat' and worker-initiated 'request' are reserved for the hang watchdog and later channels.
    }
  }

  function onReady (proc: Proc): void {
    if (proc.state !== 'starting') return
    clearTimeout(proc.startTimer)
    proc.readyAt = now()
    const slot = proc.slot
    if (proc.candidate) {
      // A reload's new generation takes over the slot; the reload drains the old worker.
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
      // Became ready after the shutdown began: it must drain too.
      askToExit(proc, 'close')
      return
    }
    slot.everReady = true
    if (slots.every((s) => s.everReady)) {
      for (const w of readyWaiters) w.resolve()
      readyWaiters = []
    }
  }

  // ── exits, backoff, crash-loop guard ──────────────────────────────────────────────────────
  function exitReason (proc: Proc, signal: NodeJS.Signals | null): ExitReason {
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
    for (const [id, p] of pending) {
      if (p.proc !== proc) continue
      pending.delete(id)
      clearTimeout(p.timer)
      p.reject(new errors.NCLUST_WORKER_GONE(slot.id, `exited with ${signal ?? code ?? '?'}`))
    }
    const reason = exitReason(proc, signal)
    transition(proc, 'stopped')
    const line = { workerPid: proc.pid, generation: proc.generation, code, signal, reason, error: proc.fatal }
    if (reason === 'requested') slot.log.info(line, 'worker exited')
    else slot.log.error(line, 'worker exited unexpectedly')
    events.emit('worker-exit', {
      workerId: slot.id,
      pid: proc.pid,
      generation: proc.generation,
      code,
      signal,
      reason,
      ...(proc.fatal !== undefined ? { error: proc.fatal } : {})
    })

    if (proc.candidate) return // the reload that forked it reports the failure; the old worker serves on
    if (shuttingDown !== undefined) {
      // A worker that could not close cleanly makes the whole shutdown unclean.
      if (code !== 0 || signal !== null) exitCode = 1
      if (procs.size === 0) finish()
      return
    }
    if (reason === 'requested') return

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
      void shutdown('crash-loop').then((code) => { if (options.handleSignals) process.exit(code) })
      return
    }
    slot.consecutive = consecutiveFailures(slot.consecutive, proc.readyAt, at, options.restartBackoff)
    const delay = restartDelay(slot.consecutive - 1, options.restartBackoff)
    slot.restarts += 1
    slot.log.warn({ attempt: slot.consecutive, delay, reason }, `restarting worker ${slot.id} in ${delay}ms`)
    events.emit('restart', { workerId: slot.id, attempt: slot.consecutive, delay, reason })
    slot.restartTimer = setTimeout(() => {
      // A reload's candidate may already be on its way into this slot.
      const candidate = [...procs.values()].some((p) => p.slot === slot && p.candidate)
      if (slot.current === undefined && !candidate) fork(slot)
    }, delay)
  }

  // ── shutdown ──────────────────────────────────────────────────────────────────────────────
  function askToExit (proc: Proc, reason: ShutdownMessage['reason']): void {
    proc.requested = true
    if (proc.state !== 'draining') transition(proc, 'draining')
    if (proc.readyAt === undefined) {
      // Still starting: it has no requests to finish, and may not listen to messages yet.
      proc.worker.process.kill('SIGTERM')
      return
    }
    if (proc.worker.isConnected()) {
      proc.worker.send(message<ShutdownMessage>({ type: 'shutdown', deadline: options.shutdownTimeout, reason }), () => {})
    } else {
      proc.worker.process.kill('SIGTERM')
    }
  }

  function shutdown (reason: 'signal' | 'close' | 'crash-loop' | 'fatal', signal?: NodeJS.Signals): Promise<number> {
    if (shuttingDown !== undefined) return shuttingDown
    shuttingDown = new Promise<number>((resolve) => { resolveFinished = resolve })
    log.info({ reason, signal, workers: procs.size, shutdownTimeout: options.shutdownTimeout }, 'shutting down: draining every worker')
    events.emit('shutdown', { reason, ...(signal !== undefined ? { signal } : {}) })
    for (const w of readyWaiters) w.reject(new errors.NCLUST_SHUTDOWN(reason))
    readyWaiters = []
    for (const slot of slots) clearTimeout(slot.restartTimer)
    for (const proc of procs.values()) askToExit(proc, reason)
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

  /** A second signal during shutdown: do not wait for anyone. */
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
      removeSignalHandlers()
      log.info({ code, killed }, killed.length > 0
        ? `cluster stopped; SIGKILLed: ${killed.map((k) => `worker ${k.workerId} (pid ${k.pid})`).join(', ')}`
        : 'cluster stopped: every worker exited')
      events.emit('closed', { code, killed })
      resolveFinished?.(code)
    })()
  }

  // ── rolling reload ────────────────────────────────────────────────────────────────────────
  /** Resolves with 'ready' or, if the process exits first, its exit reason. */
  function settled (proc: Proc): Promise<'ready' | ExitReason> {
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

  /** Ask `proc` to drain and exit; SIGKILL it at shutdownTimeout. Resolves once it is gone. */
  function retire (proc: Proc): Promise<void> {
    if (!procs.has(proc.worker.id)) return Promise.resolve()
    const gone = new Promise<void>((resolve) => proc.worker.once('exit', () => resolve()))
    const timer = setTimeout(() => {
      proc.slot.log.error({ workerPid: proc.pid }, `old worker still alive after ${options.shutdownTimeout}ms: SIGKILL`)
      proc.worker.process.kill('SIGKILL')
    }, options.shutdownTimeout)
    askToExit(proc, 'reload')
    return gone.finally(() => clearTimeout(timer))
  }

  function reload (): Promise<ReloadResult> {
    if (reloading !== undefined) return reloading
    const started = now()
    const result = (fields: Omit<ReloadResult, 'ms'>): ReloadResult => ({ ...fields, ms: now() - started })
    reloading = (async (): Promise<ReloadResult> => {
      log.info({ workers: slots.length }, 'rolling reload: one slot at a time')
      events.emit('reload', { phase: 'start' })
      let replaced = 0
      for (const slot of slots) {
        if (shuttingDown !== undefined) return result({ ok: false, replaced, reason: 'shutdown began' })
        const old = slot.current
        const next = fork(slot, true)
        const outcome = await settled(next)
        if (outcome !== 'ready') {
          slot.log.error({ workerPid: next.pid, generation: next.generation, outcome },
            `rolling reload stopped: worker ${slot.id} generation ${next.generation} did not start (${outcome}); the old workers keep serving`)
          // A slot left empty by a crash during the reload gets its normal restart.
          if (slot.current === undefined && slot.restartTimer === undefined && shuttingDown === undefined) fork(slot)
          return result({ ok: false, replaced, failedWorkerId: slot.id, reason: outcome })
        }
        if (old !== undefined) await retire(old)
        replaced += 1
      }
      return result({ ok: true, replaced })
    })().then((r) => {
      log[r.ok ? 'info' : 'error']({ ...r }, r.ok ? `rolling reload done: ${r.replaced} workers replaced` : 'rolling reload failed')
      events.emit('reload', { phase: 'done', ...r })
      return r
    }).finally(() => { reloading = undefined })
    return reloading
  }

  // ── request/reply over IPC ────────────────────────────────────────────────────────────────
  function request<T> (workerId: number, channel: string, payload?: unknown, opts: RequestOptions = {}): Promise<T> {
    const timeout = opts.timeout ?? 1000
    const proc = slots[workerId]?.current
    if (proc === undefined || !proc.worker.isConnected()) {
      return Promise.reject(new errors.NCLUST_WORKER_GONE(workerId, 'no live process in this slot'))
    }
    const id = nextRequestId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new errors.NCLUST_REQUEST_TIMEOUT(workerId, channel, timeout))
      }, timeout)
      pending.set(id, { proc, channel, resolve: resolve as (v: unknown) => void, reject, timer })
      proc.worker.send(message<RequestMessage>({ type: 'request', id, channel, payload }), (err) => {
        if (err === null || !pending.has(id)) return
        pending.delete(id)
        clearTimeout(timer)
        reject(new errors.NCLUST_WORKER_GONE(workerId, err.message))
      })
    })
  }

  async function requestAll<T> (channel: string, payload?: unknown, opts: RequestOptions = {}): Promise<Array<RequestResult<T>>> {
    const targets = slots.flatMap((s) => s.current !== undefined && s.current.state === 'ready' ? [s.current] : [])
    return await Promise.all(targets.map(async (proc): Promise<RequestResult<T>> => {
      const t0 = performance.now()
      try {
        const value = await request<T>(proc.slot.id, channel, payload, opts)
        return { workerId: proc.slot.id, pid: proc.pid, ok: true, value, ms: performance.now() - t0 }
      } catch (err) {
        return { workerId: proc.slot.id, pid: proc.pid, ok: false, error: (err as Error).message, ms: performance.now() - t0 }
      }
    }))
  }

  // ── signals ───────────────────────────────────────────────────────────────────────────────
  function onSignal (signal: NodeJS.Signals): void {
    if (shuttingDown !== undefined) { force(signal); return }
    log.info({ signal }, `${signal} received`)
    void shutdown('signal', signal).then((code) => process.exit(code))
  }
  /** An error in the primary's own code (a user's hook, a metrics server): drain the workers, exit 1. */
  function onFatal (err: unknown): void {
    log.fatal({ err }, 'uncaught error in the primary: shutting the cluster down')
    exitCode = 1
    void shutdown('fatal').then((code) => process.exit(code))
  }
  function onSighup (): void {
    if (shuttingDown === undefined) void reload()
  }
  function removeSignalHandlers (): void {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGHUP', onSighup)
    process.removeListener('uncaughtException', onFatal)
    process.removeListener('unhandledRejection', onFatal)
  }
  if (options.handleSignals) {
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
    process.on('SIGHUP', onSighup)
    process.on('uncaughtException', onFatal)
    process.on('unhandledRejection', onFatal)
  }

  // ── start ─────────────────────────────────────────────────────────────────────────────────
  log.info({ workers: options.workers, port: options.port, host: options.host }, `starting ${options.workers} workers`)
  for (const slot of slots) fork(slot)

  return {
    role: 'primary',
    logger: log,
    size: options.workers,
    events,
    workers (): WorkerInfo[] {
      return [...procs.values()].map((p) => ({
        workerId: p.slot.id, pid: p.pid, state: p.state, generation: p.generation, startedAt: p.startedAt, restarts: p.slot.restarts
      })).sort((a, b) => a.workerId - b.workerId || a.generation - b.generation)
    },
    request,
    requestAll,
    onClose (fn) { closeHooks.push(fn) },
    reload: () => shuttingDown !== undefined
      ? Promise.resolve({ ok: false, replaced: 0, ms: 0, reason: 'shutting down' })
      : reload(),
    close: () => shutdown('close'),
    ready () {
      if (slots.every((s) => s.everReady)) return Promise.resolve()
      if (shuttingDown !== undefined) return Promise.reject(new errors.NCLUST_SHUTDOWN('already shutting down'))
      return new Promise<void>((resolve, reject) => { readyWaiters.push({ resolve, reject }) })
    }
  }
}
