import type { Server } from 'node:net'
import type { Worker } from 'node:cluster'
import type { PrimaryHandle, WorkerInfo } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { tcpMigrateReq, TCP_MIGRATE_WARNING } from '../balance.js'
import { createSlotMachine, monotonicNow } from './slots.js'
import { createReplacer } from './replace.js'
import { startWatchdog } from './watchdog.js'
import { startRecycler } from './recycle.js'
import { createRequests } from './requests.js'
import { startSticky, type StickySlots } from './sticky.js'
import { isHung } from './policy.js'
import type { SlotMachine } from './slots.js'
import { closeOrphanedHandoffs } from './handoffs.js'
import { startReaper } from './reaper.js'

/**
 * The primary, assembled: the slot machine (slots.ts: fork, ready, exit, backoff, crash-loop guard,
 * start verdict, shutdown) and the policies that drive it: the replacer (replace.ts: reload,
 * recycle and scale through one surge-first path, one operation at a time), the recycler
 * (recycle.ts), the watchdog (watchdog.ts) and the request/reply channel (requests.ts). This file
 * wires them to the process signals and returns the handle. The primary never builds the app.
 *
 *   SIGTERM / SIGINT  graceful shutdown (a second one: SIGKILL everyone)
 *   SIGHUP            rolling reload
 *   SIGTTIN / SIGTTOU one worker more / less
 */
/** `stickyServers`: balance 'sticky' over listening sockets the primary already owns (inherited or handed over). */
export function startSupervisor (options: ResolvedOptions, now: () => number = monotonicNow, stickyServers?: Server[]): PrimaryHandle {
  const m = createSlotMachine(options, now)
  const { log } = m
  const replacer = createReplacer(m)
  const watchdog = startWatchdog(m)
  startRecycler(m, replacer)
  const { request, requestAll } = createRequests(m)

  // The machine decides (transitions.ts): shut down, force, reload, scale, or nothing during a shutdown.
  const onSignal = (signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGTTIN' | 'SIGTTOU'): void => m.signal(signal, replacer.desired)
  m.onOperation((op) => {
    if (op.type === 'reload') replacer.runPass(op.pass)
    else if (op.type === 'reload-cancelled') replacer.cancelPass(op.pass, op.reason)
    else void replacer.scale(op.n)
  })
  /** An error in the primary's own code (a user's hook, a metrics server): drain the workers, exit 1. */
  function onFatal (err: unknown): void {
    log.fatal({ err }, 'uncaught error in the primary: shutting the cluster down')
    m.fail()
    void m.shutdown('fatal', undefined, true)
  }
  const handlers: Array<[string, (...args: any[]) => void]> = [
    ['SIGTERM', onSignal], ['SIGINT', onSignal], ['SIGHUP', onSignal], ['SIGTTIN', onSignal], ['SIGTTOU', onSignal],
    ['uncaughtException', onFatal], ['unhandledRejection', onFatal]
  ]
  if (options.handleSignals) for (const [name, fn] of handlers) process.on(name, fn)
  const stopHandoffs = closeOrphanedHandoffs() // connections handed to a worker that died first: reset, not hung
  // Kills the workers a SIGKILLed primary leaves behind (a blocked one never notices): see reaper.ts.
  const reaper = startReaper(options.shutdownTimeout, (err) => log.debug({ err }, 'no reaper: the workers of a killed primary exit on their own only'))
  m.onFinish(() => {
    stopHandoffs()
    reaper.stop()
    watchdog.stop()
    for (const [name, fn] of handlers) process.removeListener(name, fn)
  })

  log.info({ workers: options.workers, workersFrom: options.workersFrom, port: options.port, host: options.host, balance: options.balance, reaperPid: reaper.pid },
    `workers: ${options.workers} (${options.workersFrom})`)
  if (options.balance === 'kernel' && tcpMigrateReq() === 'off') log.warn(TCP_MIGRATE_WARNING)
  // balance 'sticky': the primary's listener, fed by the slots through a small interface (see sticky.ts).
  if (options.balance === 'sticky' && stickyServers !== undefined) {
    startSticky(stickySlots(m), options, stickyServers)
  }
  for (const slot of [...m.slots]) m.fork(slot)

  const handle: PrimaryHandle = {
    role: 'primary',
    logger: log,
    get size () { return replacer.desired },
    events: m.events,
    workers (): WorkerInfo[] {
      return [...m.procs.values()].map((p) => ({
        // startedAt on the wall clock for people, from the monotonic age (uptime stays right across a clock step).
        workerId: p.slot.id, pid: p.pid, state: p.state, generation: p.generation, startedAt: Date.now() - (m.now() - p.startedAt), restarts: p.slot.restarts
      })).sort((a, b) => a.workerId - b.workerId || a.generation - b.generation)
    },
    request,
    requestAll,
    onClose: (fn) => m.onClose(fn),
    reload: () => replacer.reload('handle.reload()'),
    scale: (n) => replacer.scale(n),
    close: () => m.shutdown('close'),
    ready: () => m.ready()
  }
  machines.set(handle, m)
  return handle
}

const machines = new WeakMap<PrimaryHandle, SlotMachine>()

/** The slot machine behind a handle `startSupervisor` returned: what `nclust status` reads (control.ts). */
export function machineOf (handle: PrimaryHandle): SlotMachine | undefined {
  return machines.get(handle)
}

/**
 * What the sticky listener reads from the slot machine: the slots its hash runs over (the initial
 * ones from the start, a slot added by scaling once its first worker is ready), the worker serving
 * a slot (ready, not asked to exit, not hung by the watchdog's own rule) and the slot changes.
 */
function stickySlots (m: SlotMachine): StickySlots {
  const initial = new Set(m.slots.map((s) => s.id)) // until their first ready: later, a slot counts once it has been ready (a re-added id too)
  const changed: Array<(slotId: number, what: 'ready' | 'down' | 'hung') => void> = []
  const tell = (slotId: number, what: 'ready' | 'down' | 'hung'): void => { for (const fn of changed) fn(slotId, what) }
  m.events.on('state', (e) => {
    if (e.to === 'ready') { initial.delete(e.workerId); tell(e.workerId, 'ready') } else if (e.from === 'ready') tell(e.workerId, 'down')
  })
  m.events.on('worker-exit', (e) => tell(e.workerId, 'down'))
  m.events.on('hung', (e) => tell(e.workerId, 'hung'))
  return {
    configured: () => m.slots.filter((s) => !s.removed && (s.everReady || initial.has(s.id))).map((s) => s.id),
    serving (slotId) {
      const at = m.now()
      let best: { generation: number, worker: Worker } | undefined
      for (const p of m.procs.values()) {
        if (p.slot.id !== slotId || p.state !== 'ready' || p.exitAs !== undefined || p.requested) continue
        if (isHung(p.lastBeat, at, m.options.heartbeatTimeout)) continue
        if (best === undefined || p.generation > best.generation) best = { generation: p.generation, worker: p.worker }
      }
      return best?.worker
    },
    onChange: (fn) => { changed.push(fn) },
    onShutdown: (fn) => { m.events.on('shutdown', () => fn()) },
    now: () => m.now(),
    log: m.log
  }
}
