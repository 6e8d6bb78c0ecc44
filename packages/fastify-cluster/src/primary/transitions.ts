import { clone, Draft, newProc, newSlot, type Effect, type MachineConfig, type MachineEvent, type MachineState } from './machine.js'
import { onExit } from './exits.js'

export { candidateIn, newProc, newSlot } from './machine.js'
export type { Effect, LogLevel, MachineConfig, MachineEvent, MachineState, ProcState, Signal, SlotState } from './machine.js'

/**
 * The slot machine's transitions as one pure function, `step(state, event) -> { state, effects }`,
 * the way policy.ts keeps decisions pure: no timers, no processes, no clock (times come in the
 * events). slots.ts is the shell that turns node:cluster callbacks and timers into events and
 * applies the effects (fork, send, kill, timers, log, emit); the property tests (test/transitions
 * .test.ts) drive this function with random event sequences and check the invariants.
 * The state, events and effects, the constructors and the operations every handler shares (`Draft`)
 * are in machine.ts; the `exit` handler (backoff, crash loop, start verdict) is in exits.ts.
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

export function initialState (config: MachineConfig, workers: number): MachineState {
  let s: MachineState = { config, slots: [], procs: new Map(), nextKey: 0, shutdown: undefined, exitCode: 0, exitProcess: false, killed: [], finished: false, restarts: 0, reload: { pass: 0, running: false, queued: false } }
  for (let i = 0; i < workers; i++) s = step(s, { type: 'add-slot' }).state
  return s
}

/** The one transition function. Never mutates `state`. */
export function step (state: MachineState, event: MachineEvent): { state: MachineState, effects: Effect[] } {
  const d = new Draft(clone(state))
  const s = d.s
  const cfg = d.cfg
  switch (event.type) {
    case 'add-slot': {
      s.slots.push(newSlot(s.nextKey++, s.slots.length))
      break
    }
    case 'retire-slot':
    case 'remove-slot': {
      const slot = d.slotByKey(event.slot)
      if (slot === undefined) break
      d.clearRestart(slot)
      slot.removed = true
      if (event.type === 'retire-slot') break
      d.fx.push({ type: 'close-listener', slotId: slot.id }) // kernel balancing: a socket nobody accepts on would hold connections forever
      s.slots.splice(s.slots.indexOf(slot), 1)
      d.readyCheck()
      break
    }
    case 'fork': {
      const slot = d.slotByKey(event.slot)
      if (slot !== undefined) d.fork(slot, event.candidate)
      break
    }
    case 'forked': {
      const slot = d.slotByKey(event.slot)
      if (slot === undefined) break
      const p = newProc(slot, event)
      s.procs.set(p.id, p)
      if (!p.candidate) slot.current = p.id
      d.log('info', slot.key, { workerPid: p.pid, generation: p.generation, candidate: p.candidate }, 'worker forked')
      d.fx.push({ type: 'emit', name: 'state', payload: { workerId: slot.id, pid: p.pid, generation: p.generation, from: null, to: 'starting' } })
      d.fx.push({ type: 'start-timer', id: p.id, ms: cfg.startTimeout })
      break
    }
    case 'refill': {
      const slot = d.slotByKey(event.slot)
      if (slot !== undefined && slot.current === undefined && !slot.restartPending && !d.candidateIn(slot)) d.fork(slot)
      break
    }
    case 'ready': {
      const p = s.procs.get(event.id)
      if (p === undefined || p.state !== 'starting') break
      d.fx.push({ type: 'clear-start-timer', id: p.id })
      p.readyAt = event.at
      p.lastBeat = event.at
      const slot = d.slotByKey(p.slot)
      if (p.candidate) {
        // A replacement's new generation takes over the slot; the replacement drains the old worker.
        p.candidate = false
        if (slot !== undefined) { d.clearRestart(slot); slot.current = p.id }
      }
      d.moveTo(p, 'ready')
      const startMs = p.readyAt - p.startedAt
      d.log('info', p.slot, { workerPid: p.pid, generation: p.generation, startMs }, 'worker ready')
      d.fx.push({ type: 'emit', name: 'worker-ready', payload: { workerId: p.slotId, pid: p.pid, generation: p.generation, startMs } })
      if (s.shutdown !== undefined) { d.ask(p, 'close'); break } // ready after the shutdown began: it must drain too
      if (slot === undefined) break
      slot.everReady = true
      slot.startFailures = 0
      d.readyCheck()
      break
    }
    case 'fatal': {
      const p = s.procs.get(event.id)
      if (p === undefined) break
      // A worker decides their size; the primary keeps them (in its logs, events, `nclust reload`): capped.
      p.fatal = event.message.slice(0, MAX_FATAL_MESSAGE)
      p.fatalStack = event.stack?.slice(0, MAX_FATAL_STACK)
      // A failed start is reported once per try at the exit, and with its stack once at the verdict.
      if (event.reason !== 'startFailed') d.log('error', p.slot, { workerPid: p.pid, reason: event.reason, error: event.message }, 'worker reported a fatal error')
      break
    }
    case 'heartbeat': {
      const p = s.procs.get(event.id)
      if (p === undefined) break
      p.lastBeat = event.at
      p.requests = event.requests
      p.rss = event.rss
      p.cpu = event.cpu ?? null
      p.elu = event.elu ?? null
      p.heartbeats += 1
      break
    }
    case 'exit': onExit(d, event); break
    case 'start-timeout': {
      const p = s.procs.get(event.id)
      if (p === undefined || p.state !== 'starting') break
      p.startTimedOut = true
      d.log('error', p.slot, { workerPid: p.pid, startTimeout: cfg.startTimeout }, `worker not ready within ${cfg.startTimeout}ms: killing it`)
      d.fx.push({ type: 'kill', id: p.id, signal: 'SIGKILL' })
      break
    }
    case 'restart-due': {
      const slot = d.slotByKey(event.slot)
      if (slot === undefined || !slot.restartPending) break
      slot.restartPending = false
      // A replacement's candidate may already be on its way into this slot.
      if (slot.current === undefined && !d.candidateIn(slot)) d.fork(slot)
      break
    }
    case 'kill-timer': {
      if (s.shutdown === undefined || s.finished) break
      for (const p of s.procs.values()) {
        d.log('error', p.slot, { workerPid: p.pid, shutdownTimeout: cfg.shutdownTimeout },
          `worker ${p.slotId} (pid ${p.pid}) still alive after ${cfg.shutdownTimeout}ms: SIGKILL`)
      }
      d.killAll()
      s.exitCode = 1
      break
    }
    case 'ask': {
      const p = s.procs.get(event.id)
      if (p !== undefined) d.ask(p, event.reason, event.exitAs)
      break
    }
    case 'exit-as': {
      const p = s.procs.get(event.id)
      if (p !== undefined) p.exitAs = event.exitAs
      break
    }
    case 'count-restart': {
      const slot = d.slotByKey(event.slot)
      if (slot !== undefined) slot.restarts += 1
      break
    }
    case 'shutdown': d.shutdown(event.reason, event.signal, event.exit ?? false); break
    case 'signal': {
      const sig = event.signal
      if (sig === 'SIGTERM' || sig === 'SIGINT') {
        if (s.shutdown !== undefined) {
          // A second signal during shutdown: SIGKILL everyone now.
          d.log('warn', null, { signal: sig, workers: s.procs.size }, 'second signal during shutdown: killing every worker now')
          s.exitCode = 1
          d.killAll()
          if (s.finished) d.fx.push({ type: 'force-close' }) // only the close hooks are left: stop waiting for them
          break
        }
        d.log('info', null, { signal: sig }, `${sig} received`)
        d.shutdown('signal', sig, true)
        break
      }
      if (sig === 'SIGHUP') { d.requestReload('SIGHUP'); break }
      if (s.shutdown !== undefined) break
      if (sig === 'SIGTTIN') d.fx.push({ type: 'scale', n: event.desired + 1 })
      else if (event.desired > 1) d.fx.push({ type: 'scale', n: event.desired - 1 })
      else d.log('warn', null, { workers: 1 }, 'SIGTTOU: already at 1 worker, never fewer')
      break
    }
    case 'fail': s.exitCode = 1; break
    case 'reload-request': d.requestReload(event.source ?? 'request'); break
    case 'reload-done': {
      if (!s.reload.running) break
      s.reload.running = false
      if (s.reload.queued && s.shutdown === undefined) d.startPass()
      break
    }
  }
  return { state: s, effects: d.fx }
}
