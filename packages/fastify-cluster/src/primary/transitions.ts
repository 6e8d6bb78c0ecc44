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
  const handle = handlers[event.type] as (d: Draft, event: MachineEvent) => void // the table's type pairs each event with its handler
  handle(d, event)
  return { state: d.s, effects: d.fx }
}

type On<T extends MachineEvent['type']> = Extract<MachineEvent, { type: T }>
type Handler<T extends MachineEvent['type']> = (d: Draft, event: On<T>) => void

/** One handler per event: following an event from signal to effect means reading one function. */
const handlers: { [T in MachineEvent['type']]: Handler<T> } = {
  'add-slot': onAddSlot,
  'retire-slot': onRemoveSlot,
  'remove-slot': onRemoveSlot,
  fork: onFork,
  forked: onForked,
  refill: onRefill,
  ready: onReady,
  fatal: onFatal,
  heartbeat: onHeartbeat,
  exit: onExit,
  'start-timeout': onStartTimeout,
  'restart-due': onRestartDue,
  'kill-timer': onKillTimer,
  ask: onAsk,
  'exit-as': onExitAs,
  'count-restart': onCountRestart,
  shutdown: (d, e) => d.shutdown(e.reason, e.signal, e.exit ?? false),
  signal: onSignal,
  fail: (d) => { d.s.exitCode = 1 },
  'reload-request': (d, e) => d.requestReload(e.source ?? 'request'),
  'reload-done': onReloadDone
}

function onAddSlot (d: Draft): void {
  d.s.slots.push(newSlot(d.s.nextKey++, d.s.slots.length))
}

/** Retire (scale down: never forked into again) or remove (its workers are gone) a slot. */
function onRemoveSlot (d: Draft, event: On<'retire-slot' | 'remove-slot'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot === undefined) return
  d.clearRestart(slot)
  slot.removed = true
  if (event.type === 'retire-slot') return
  d.fx.push({ type: 'close-listener', slotId: slot.id }) // kernel balancing: a socket nobody accepts on would hold connections forever
  d.s.slots.splice(d.s.slots.indexOf(slot), 1)
  d.readyCheck()
}

function onFork (d: Draft, event: On<'fork'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot !== undefined) d.fork(slot, event.candidate)
}

function onForked (d: Draft, event: On<'forked'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot === undefined) return
  const p = newProc(slot, event)
  d.s.procs.set(p.id, p)
  if (!p.candidate) slot.current = p.id
  d.log('info', slot.key, { workerPid: p.pid, generation: p.generation, candidate: p.candidate }, 'worker forked')
  d.fx.push({ type: 'emit', name: 'state', payload: { workerId: slot.id, pid: p.pid, generation: p.generation, from: null, to: 'starting' } })
  d.fx.push({ type: 'start-timer', id: p.id, ms: d.cfg.startTimeout })
}

function onRefill (d: Draft, event: On<'refill'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot !== undefined && slot.current === undefined && !slot.restartPending && !d.candidateIn(slot)) d.fork(slot)
}

function onReady (d: Draft, event: On<'ready'>): void {
  const p = d.s.procs.get(event.id)
  if (p === undefined || p.state !== 'starting') return
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
  if (d.s.shutdown !== undefined) { d.ask(p, 'close'); return } // ready after the shutdown began: it must drain too
  if (slot === undefined) return
  slot.everReady = true
  slot.startFailures = 0
  d.readyCheck()
}

function onFatal (d: Draft, event: On<'fatal'>): void {
  const p = d.s.procs.get(event.id)
  if (p === undefined) return
  // A worker decides their size; the primary keeps them (in its logs, events, `nclust reload`): capped.
  p.fatal = event.message.slice(0, MAX_FATAL_MESSAGE)
  p.fatalStack = event.stack?.slice(0, MAX_FATAL_STACK)
  // A failed start is reported once per try at the exit, and with its stack once at the verdict.
  if (event.reason !== 'startFailed') d.log('error', p.slot, { workerPid: p.pid, reason: event.reason, error: event.message }, 'worker reported a fatal error')
}

function onHeartbeat (d: Draft, event: On<'heartbeat'>): void {
  const p = d.s.procs.get(event.id)
  if (p === undefined) return
  p.lastBeat = event.at
  p.requests = event.requests
  p.rss = event.rss
  p.cpu = event.cpu ?? null
  p.elu = event.elu ?? null
  p.heartbeats += 1
}

function onStartTimeout (d: Draft, event: On<'start-timeout'>): void {
  const p = d.s.procs.get(event.id)
  if (p === undefined || p.state !== 'starting') return
  p.startTimedOut = true
  d.log('error', p.slot, { workerPid: p.pid, startTimeout: d.cfg.startTimeout }, `worker not ready within ${d.cfg.startTimeout}ms: killing it`)
  d.fx.push({ type: 'kill', id: p.id, signal: 'SIGKILL' })
}

function onRestartDue (d: Draft, event: On<'restart-due'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot === undefined || !slot.restartPending) return
  slot.restartPending = false
  // A replacement's candidate may already be on its way into this slot.
  if (slot.current === undefined && !d.candidateIn(slot)) d.fork(slot)
}

function onKillTimer (d: Draft): void {
  const { s, cfg } = d
  if (s.shutdown === undefined || s.finished) return
  for (const p of s.procs.values()) {
    d.log('error', p.slot, { workerPid: p.pid, shutdownTimeout: cfg.shutdownTimeout },
      `worker ${p.slotId} (pid ${p.pid}) still alive after ${cfg.shutdownTimeout}ms: SIGKILL`)
  }
  d.killAll()
  s.exitCode = 1
}

function onAsk (d: Draft, event: On<'ask'>): void {
  const p = d.s.procs.get(event.id)
  if (p !== undefined) d.ask(p, event.reason, event.exitAs)
}

function onExitAs (d: Draft, event: On<'exit-as'>): void {
  const p = d.s.procs.get(event.id)
  if (p !== undefined) p.exitAs = event.exitAs
}

function onCountRestart (d: Draft, event: On<'count-restart'>): void {
  const slot = d.slotByKey(event.slot)
  if (slot !== undefined) slot.restarts += 1
}

/** TERM / INT shut down (a second one: SIGKILL everyone), HUP reloads, TTIN / TTOU scale by one. */
function onSignal (d: Draft, event: On<'signal'>): void {
  const s = d.s
  const sig = event.signal
  if (sig === 'SIGTERM' || sig === 'SIGINT') {
    if (s.shutdown !== undefined) {
      // A second signal during shutdown: SIGKILL everyone now.
      d.log('warn', null, { signal: sig, workers: s.procs.size }, 'second signal during shutdown: killing every worker now')
      s.exitCode = 1
      d.killAll()
      if (s.finished) d.fx.push({ type: 'force-close' }) // only the close hooks are left: stop waiting for them
      return
    }
    d.log('info', null, { signal: sig }, `${sig} received`)
    d.shutdown('signal', sig, true)
    return
  }
  if (sig === 'SIGHUP') { d.requestReload('SIGHUP'); return }
  if (s.shutdown !== undefined) return
  if (sig === 'SIGTTIN') d.fx.push({ type: 'scale', n: event.desired + 1 })
  else if (event.desired > 1) d.fx.push({ type: 'scale', n: event.desired - 1 })
  else d.log('warn', null, { workers: 1 }, 'SIGTTOU: already at 1 worker, never fewer')
}

function onReloadDone (d: Draft): void {
  const reload = d.s.reload
  if (!reload.running) return
  reload.running = false
  if (reload.queued && d.s.shutdown === undefined) d.startPass()
}
