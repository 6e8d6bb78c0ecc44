import type { ExitReason, ShutdownReason, WorkerState } from '../types.js'
import { consecutiveFailures, crashLoopTripped, recordFailure, restartDelay } from './backoff.js'
import { startGivesUp } from './policy.js'
import type { Effect, LogLevel, MachineEvent, MachineState, ProcState, SlotState } from './transitions.js'

/**
 * The `exit` transition of the slot machine (see transitions.ts): the exit reason, the backoff
 * and restart, the crash-loop guard, the start verdict and the end of a shutdown. Pure: it
 * changes the draft state `step` hands it and pushes effects.
 */
export function exitReason (p: ProcState, signal: NodeJS.Signals | null): ExitReason {
  if (p.exitAs !== undefined) return p.exitAs
  if (p.requested) return 'requested'
  if (p.startTimedOut) return 'start-timeout'
  if (p.readyAt === undefined) return 'start-failed'
  return signal !== null ? 'signal' : 'crash'
}

export interface Helpers {
  log: (level: LogLevel, slot: number | null, fields: Record<string, unknown>, msg: string) => void
  moveTo: (p: ProcState, to: WorkerState) => void
  fork: (slot: SlotState) => void
  shutdown: (reason: ShutdownReason, signal: NodeJS.Signals | undefined, exit: boolean) => void
  finish: () => void
  newSlot: (key: number, id: number) => SlotState
}

/** Exits, backoff, crash-loop guard, start verdict. Mutates the draft `s` of `step`. */
export function onExit (s: MachineState, e: Extract<MachineEvent, { type: 'exit' }>, fx: Effect[], h: Helpers): void {
  const p = s.procs.get(e.id)
  if (p === undefined) return
  const cfg = s.config
  const { code, signal } = e
  fx.push({ type: 'clear-start-timer', id: p.id })
  s.procs.delete(p.id)
  // A slot removed while one of its processes lived on: nothing to restart there.
  const slot: SlotState = s.slots.find((x) => x.key === p.slot) ??
    { ...h.newSlot(p.slot, p.slotId), generation: p.generation, everReady: true, removed: true }
  if (slot.current === p.id) slot.current = undefined
  const reason = exitReason(p, signal)
  h.moveTo(p, 'stopped')
  const startFailure = !slot.everReady && !p.requested && (reason === 'start-failed' || reason === 'start-timeout')
  const line = { workerPid: p.pid, generation: p.generation, code, signal, reason, error: p.fatal }
  if (reason === 'requested' || reason === 'recycle') h.log('info', p.slot, line, 'worker exited')
  else if (!startFailure || p.candidate || s.shutdown !== undefined) h.log('error', p.slot, line, 'worker exited unexpectedly')
  fx.push({
    type: 'emit',
    name: 'worker-exit',
    payload: { workerId: p.slotId, pid: p.pid, generation: p.generation, code, signal, reason, ...(p.fatal !== undefined ? { error: p.fatal } : {}) }
  })

  // The shutdown branch comes first, whoever exits: when the last process to go is a candidate
  // (a reload or scale-up interrupted by SIGTERM), it is the one that must finish the shutdown.
  if (s.shutdown !== undefined) {
    // A worker that could not close cleanly makes the whole shutdown unclean; a worker still
    // starting that we SIGTERMed may die of it before it installs its handler: that is clean.
    const termedWhileStarting = p.requested && p.readyAt === undefined && signal === 'SIGTERM'
    if ((code !== 0 && code !== null) || (signal !== null && !termedWhileStarting)) s.exitCode = 1
    if (s.procs.size === 0) h.finish()
    return
  }
  if (p.candidate) return // the policy that forked it reports the failure; the old worker serves on
  if (p.requested || slot.removed) return
  if (startFailure) {
    slot.startFailures += 1
    const tries = cfg.startRetries + 1
    const error = p.fatal ?? (reason === 'start-timeout' ? `not ready within ${cfg.startTimeout}ms` : 'exited before ready')
    if (!startGivesUp(slot.startFailures, cfg.startRetries)) {
      const delay = restartDelay(slot.startFailures - 1, cfg.restartBackoff)
      h.log('warn', slot.key, { workerPid: p.pid, generation: p.generation, reason, code, signal, try: slot.startFailures, tries, delay, error },
        `worker ${slot.id} did not start (try ${slot.startFailures} of ${tries}, ${reason}): ${error}; retrying in ${delay}ms`)
      scheduleRestart(slot, delay, slot.startFailures, reason)
      return
    }
    s.exitCode = 1
    const err = new Error(error)
    err.stack = p.fatalStack ?? `Error: ${error} (no stack: the worker sent none)`
    h.log('fatal', slot.key, { reason, tries, err },
      `worker ${slot.id} could not start (${tries} tries, ${reason}): ${error}; stopping the cluster, exit 1`)
    fx.push({ type: 'emit', name: 'start-failed', payload: { workerId: slot.id, tries, reason, error, ...(p.fatalStack !== undefined ? { stack: p.fatalStack } : {}) } })
    h.shutdown('start-failed', undefined, cfg.handleSignals)
    return
  }

  slot.failures = recordFailure(slot.failures, e.at, cfg.crashLoop)
  if (crashLoopTripped(slot.failures, cfg.crashLoop)) {
    s.exitCode = 1
    const detail = { workerId: slot.id, failures: slot.failures.length, windowMs: cfg.crashLoop.window, lastCode: code, lastSignal: signal }
    h.log('fatal', slot.key, { ...detail, lastReason: reason, lastError: p.fatal },
      `crash loop: worker ${slot.id} failed ${slot.failures.length} times within ${cfg.crashLoop.window}ms ` +
      `(last exit: ${signal ?? `code ${String(code)}`}, ${reason}${p.fatal !== undefined ? `: ${p.fatal}` : ''}); ` +
      'stopping the other workers and exiting 1')
    fx.push({ type: 'emit', name: 'crash-loop', payload: detail })
    h.shutdown('crash-loop', undefined, cfg.handleSignals)
    return
  }
  slot.consecutive = consecutiveFailures(slot.consecutive, p.readyAt, e.at, cfg.restartBackoff)
  const delay = restartDelay(slot.consecutive - 1, cfg.restartBackoff)
  h.log('warn', slot.key, { attempt: slot.consecutive, delay, reason }, `restarting worker ${slot.id} in ${delay}ms`)
  scheduleRestart(slot, delay, slot.consecutive, reason)

  function scheduleRestart (slot: SlotState, delay: number, attempt: number, reason: ExitReason): void {
    slot.restarts += 1
    fx.push({ type: 'emit', name: 'restart', payload: { workerId: slot.id, attempt, delay, reason } })
    if (slot.restartPending) fx.push({ type: 'clear-restart-timer', slot: slot.key })
    slot.restartPending = true
    fx.push({ type: 'restart-timer', slot: slot.key, ms: delay })
  }
}
