import type { ExitReason } from '../types.js'
import { consecutiveFailures, crashLoopTripped, recordFailure, restartDelay } from './backoff.js'
import { startGivesUp } from './policy.js'
import { newSlot, type Draft, type MachineEvent, type ProcState, type SlotState } from './machine.js'

/**
 * The `exit` transition of the slot machine (see transitions.ts): the exit reason, the backoff
 * and restart, the crash-loop guard, the start verdict and the end of a shutdown. Pure: it
 * changes the draft `step` hands it (its state and effects, machine.ts).
 */
export function exitReason (p: ProcState, signal: NodeJS.Signals | null): ExitReason {
  if (p.exitAs !== undefined) return p.exitAs
  if (p.requested) return 'requested'
  if (p.startTimedOut) return 'start-timeout'
  if (p.readyAt === undefined) return 'start-failed'
  return signal !== null ? 'signal' : 'crash'
}

/** Exits, backoff, crash-loop guard, start verdict. Mutates the draft `s` of `step`. */
export function onExit (d: Draft, e: Extract<MachineEvent, { type: 'exit' }>): void {
  const { s, fx } = d
  const p = s.procs.get(e.id)
  if (p === undefined) return
  const cfg = s.config
  const { code, signal } = e
  fx.push({ type: 'clear-start-timer', id: p.id })
  s.procs.delete(p.id)
  // A slot removed while one of its processes lived on: nothing to restart there.
  const slot: SlotState = s.slots.find((x) => x.key === p.slot) ??
    { ...newSlot(p.slot, p.slotId), generation: p.generation, everReady: true, removed: true }
  if (slot.current === p.id) slot.current = undefined
  const reason = exitReason(p, signal)
  d.moveTo(p, 'stopped')
  const startFailure = !slot.everReady && !p.requested && (reason === 'start-failed' || reason === 'start-timeout')
  if (reason !== 'requested') {
    slot.lastExit = { pid: p.pid, reason, code, signal, ...(p.fatal !== undefined ? { error: p.fatal } : {}), ...(p.fatalStack !== undefined ? { stack: p.fatalStack } : {}) }
  }
  const line = { workerPid: p.pid, generation: p.generation, code, signal, reason, error: p.fatal }
  if (reason === 'requested' || reason === 'recycle') d.log('info', p.slot, line, 'worker exited')
  else if (!startFailure || p.candidate || s.shutdown !== undefined) d.log('error', p.slot, line, 'worker exited unexpectedly')
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
    if (s.procs.size === 0) d.finish()
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
      d.log('warn', slot.key, { workerPid: p.pid, generation: p.generation, reason, code, signal, try: slot.startFailures, tries, delay, error },
        `worker ${slot.id} did not start (try ${slot.startFailures} of ${tries}, ${reason}): ${error}; retrying in ${delay}ms`)
      scheduleRestart(slot, delay, slot.startFailures, reason)
      return
    }
    s.exitCode = 1
    const err = new Error(error)
    err.stack = p.fatalStack ?? `Error: ${error} (no stack: the worker sent none)`
    d.log('fatal', slot.key, { reason, tries, err },
      `worker ${slot.id} could not start (${tries} tries, ${reason}): ${error}; stopping the cluster, exit 1`)
    fx.push({ type: 'emit', name: 'start-failed', payload: { workerId: slot.id, tries, reason, error, ...(p.fatalStack !== undefined ? { stack: p.fatalStack } : {}) } })
    d.shutdown('start-failed', undefined, cfg.handleSignals)
    return
  }

  slot.failures = recordFailure(slot.failures, e.at, cfg.crashLoop)
  if (crashLoopTripped(slot.failures, cfg.crashLoop)) {
    s.exitCode = 1
    const detail = { workerId: slot.id, failures: slot.failures.length, windowMs: cfg.crashLoop.window, lastCode: code, lastSignal: signal }
    d.log('fatal', slot.key, { ...detail, lastReason: reason, lastError: p.fatal },
      `crash loop: worker ${slot.id} failed ${slot.failures.length} times within ${cfg.crashLoop.window}ms ` +
      `(last exit: ${signal ?? `code ${String(code)}`}, ${reason}${p.fatal !== undefined ? `: ${p.fatal}` : ''}); ` +
      'stopping the other workers and exiting 1')
    fx.push({ type: 'emit', name: 'crash-loop', payload: detail })
    d.shutdown('crash-loop', undefined, cfg.handleSignals)
    return
  }
  slot.consecutive = consecutiveFailures(slot.consecutive, p.readyAt, e.at, cfg.restartBackoff)
  const delay = restartDelay(slot.consecutive - 1, cfg.restartBackoff)
  d.log('warn', slot.key, { attempt: slot.consecutive, delay, reason }, `restarting worker ${slot.id} in ${delay}ms`)
  scheduleRestart(slot, delay, slot.consecutive, reason)

  function scheduleRestart (slot: SlotState, delay: number, attempt: number, reason: ExitReason): void {
    slot.restarts += 1
    s.restarts += 1
    fx.push({ type: 'emit', name: 'restart', payload: { workerId: slot.id, attempt, delay, reason } })
    if (slot.restartPending) fx.push({ type: 'clear-restart-timer', slot: slot.key })
    slot.restartPending = true
    fx.push({ type: 'restart-timer', slot: slot.key, ms: delay })
  }
}
