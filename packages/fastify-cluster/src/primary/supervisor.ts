import type { PrimaryHandle, WorkerInfo } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { tcpMigrateReq, TCP_MIGRATE_WARNING } from '../balance.js'
import { createSlotMachine } from './slots.js'
import { createReplacer } from './replace.js'
import { startWatchdog } from './watchdog.js'
import { startRecycler } from './recycle.js'
import { createRequests } from './requests.js'
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
export function startSupervisor (options: ResolvedOptions, now: () => number = Date.now): PrimaryHandle {
  const m = createSlotMachine(options, now)
  const { log } = m
  const replacer = createReplacer(m)
  const watchdog = startWatchdog(m)
  startRecycler(m, replacer)
  const { request, requestAll } = createRequests(m)

  // The machine decides (transitions.ts): shut down, force, reload, scale, or nothing during a shutdown.
  const onSignal = (signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGTTIN' | 'SIGTTOU'): void => m.signal(signal, replacer.desired)
  m.onOperation((op) => { void (op.type === 'reload' ? replacer.reload() : replacer.scale(op.n)) })
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
  for (const slot of [...m.slots]) m.fork(slot)

  return {
    role: 'primary',
    logger: log,
    get size () { return replacer.desired },
    events: m.events,
    workers (): WorkerInfo[] {
      return [...m.procs.values()].map((p) => ({
        workerId: p.slot.id, pid: p.pid, state: p.state, generation: p.generation, startedAt: p.startedAt, restarts: p.slot.restarts
      })).sort((a, b) => a.workerId - b.workerId || a.generation - b.generation)
    },
    request,
    requestAll,
    onClose: (fn) => m.onClose(fn),
    reload: () => m.shuttingDown
      ? Promise.resolve({ ok: false, replaced: 0, ms: 0, reason: 'shutting down' })
      : replacer.reload(),
    scale: (n) => replacer.scale(n),
    close: () => m.shutdown('close'),
    ready: () => m.ready()
  }
}
