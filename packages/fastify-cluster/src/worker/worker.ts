import cluster from 'node:cluster'
import { unlinkSync } from 'node:fs'
import type { BuildApp, WorkerContext, WorkerHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { DIAGNOSE_CHANNEL, FLUSH_CHANNEL, isPrimaryMessage, message, WORKER_ENV, type FatalMessage, type HeartbeatMessage, type ReadyMessage, type RequestMessage } from '../messages.js'
import { PROBE_DIR_ENV, probeSocketPath } from '../probe.js'
import { installChannel, onPrimaryRequest, setCurrentWorker } from './channel.js'
import { usageSampler } from './usage.js'
import { buildAndListen, createLifecycle, installFatalHandlers } from './lifecycle.js'

function envInt (name: string): number {
  const n = Number(process.env[name])
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} is not set by the primary (got ${String(process.env[name])}): is this process a worker forked by startClustered?`)
  return n
}

/**
 * A forked worker: build the app, listen, say ready; close gracefully when the primary says so,
 * on SIGTERM/SIGINT, on a fatal error, or when the primary's IPC channel goes away.
 */
export async function runWorker (buildApp: BuildApp, options: ResolvedOptions): Promise<WorkerHandle> {
  const workerId = envInt(WORKER_ENV.id)
  const generation = envInt(WORKER_ENV.generation)
  const workers = envInt(WORKER_ENV.workers)
  const log = createLogger(options.logger, 'worker', options.logFormat).child({ workerId })
  const context: WorkerContext = { workerId, workers, generation, single: false, logger: log }
  setCurrentWorker(context)
  installChannel()
  // `nclust diagnose`: node:inspector is loaded only when asked.
  onPrimaryRequest(DIAGNOSE_CHANNEL, async (payload) => await (await import('./diagnose.js')).diagnose(payload, context, options))

  const send = (m: ReadyMessage | FatalMessage | HeartbeatMessage, done: () => void = () => {}): void => {
    if (process.connected && process.send !== undefined) process.send(m, undefined, undefined, () => done())
    else done()
  }
  // The primary owns the deadline (it SIGKILLs at shutdownTimeout and says so). The worker's own
  // deadline is a backstop a second later, for when there is no primary left to do it.
  // Before exiting, flush the IPC channel (see flushIpc): no connection handed over by the primary is lost.
  const lifecycle = createLifecycle(log, options.shutdownTimeout + 1000, (code) => { void flushIpc().finally(() => process.exit(code)) })

  // node:cluster's worker exits at once (process.exit(0)) when the IPC channel drops unexpectedly,
  // cutting every in-flight request. Replace that listener: a worker whose primary died drains
  // and exits on its own deadline instead, and never keeps serving as an orphan.
  for (const listener of process.listeners('disconnect')) process.removeListener('disconnect', listener)
  process.once('disconnect', () => {
    if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true
    log.warn('primary is gone (IPC channel closed): closing')
    void lifecycle.stop(0, 'primary-gone')
  })

  process.on('message', (raw: unknown) => {
    if (isPrimaryMessage(raw) && raw.type === 'shutdown') void lifecycle.stop(0, 'shutdown', raw.reason)
  })
  // Ctrl-C reaches every process of the group: the worker drains like on a shutdown message (both
  // are idempotent), it never dies with requests in flight. A direct SIGTERM drains too, and the
  // primary, which asked for nothing, replaces the worker.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => { void lifecycle.stop(0, 'signal', signal) })
  }
  installFatalHandlers(log, lifecycle, (reason, err) => send(message<FatalMessage>({
    type: 'fatal',
    reason,
    message: err instanceof Error ? err.message : String(err),
    ...(err instanceof Error && err.stack !== undefined ? { stack: err.stack } : {})
  })))

  const started = Date.now()
  let built: Awaited<ReturnType<typeof buildAndListen>>
  try {
    built = await buildAndListen(buildApp, context, options)
  } catch (err) {
    // The primary prints one short line per failed try and the stack once, at its verdict: send it
    // there instead of printing it on every try. Nothing was returned to close; exit once it is sent.
    log.debug({ err }, 'worker failed to start')
    const e = err instanceof Error ? err : new Error(String(err))
    const exit = (): void => process.exit(1)
    setTimeout(exit, 1000).unref()
    send(message<FatalMessage>({ type: 'fatal', reason: 'startFailed', message: e.message, ...(e.stack !== undefined ? { stack: e.stack } : {}) }), exit)
    return await new Promise<never>(() => {})
  }
  const { app, address } = built
  lifecycle.setApp(app)
  if (lifecycle.stopping) {
    // A shutdown arrived while the app was starting: close what we just opened.
    await app.close()
  } else {
    log.info({ address, ms: Date.now() - started, generation }, 'worker ready')
    send(message<ReadyMessage>({ type: 'ready', pid: process.pid, workerId, generation, address }))
    startHeartbeat(app, options, send)
  }
  return {
    role: 'worker',
    app,
    context,
    close: async () => { await lifecycle.stop(0, 'close') }
  }
}

/**
 * Liveness for the primary's watchdog, and the numbers its recycler needs: a beat from the event
 * loop every heartbeatInterval with the requests received and the RSS. When the watchdog is on, a
 * hang probe thread answers the primary even if this loop never comes back.
 */
function startHeartbeat (app: WorkerHandle['app'], options: ResolvedOptions, send: (m: HeartbeatMessage) => void): void {
  if (options.heartbeatTimeout === 0 && options.maxRequests === 0 && options.maxRss === 0 && options.control === false) return
  let requests = 0
  app.server.on('request', () => { requests += 1 })
  const usage = usageSampler() // cpu and elu for `nclust status`
  const beat = (): void => send(message<HeartbeatMessage>({ type: 'heartbeat', at: Date.now(), requests, rss: process.memoryUsage.rss(), ...usage() }))
  setInterval(beat, options.heartbeatInterval).unref()
  if (options.heartbeatTimeout === 0) return
  // The primary's private socket folder (see probe.ts); without it (not forked by our primary) there is no probe.
  const probeDir = process.env[PROBE_DIR_ENV]
  if (probeDir === undefined || probeDir === '') return
  const socketPath = probeSocketPath(probeDir, process.pid)
  // Loaded only here: a worker without the probe (hangProbe after-hang, before any hang) never loads node:worker_threads.
  import('node:worker_threads').then(({ Worker: Thread }) => {
    const thread = new Thread(new URL('./hang-probe.js', import.meta.url), {
      workerData: { socketPath, directory: options.reportDirectory, defaultDirectory: options.reportDirectoryIsDefault },
      env: {}, // the thread needs no environment: no copy of the app's secrets in it
      stdout: false,
      stderr: false
    })
    thread.unref()
    thread.on('error', () => {}) // no probe: the watchdog still kills and replaces, without a report
    process.once('exit', () => { try { unlinkSync(socketPath) } catch {} })
  }).catch(() => {})
}

/**
 * node:cluster's round-robin hands each connection to a worker in an IPC message and holds the
 * socket until the worker acknowledges it. A worker that exits with such a message unread (or its
 * acknowledgement unsent) leaves that socket held open by the primary forever: the client hangs.
 * Our listener is closed by now, and the primary has stopped handing us connections once it read
 * that; a round trip after it proves every earlier hand-off has arrived (and been refused, so the
 * primary gives it to another worker), a second one that the refusals reached the primary.
 */
let flushSeq = 0
async function flushIpc (timeout = 1000): Promise<void> {
  const roundTrip = (): Promise<void> => new Promise((resolve) => {
    if (!process.connected || process.send === undefined) { resolve(); return }
    const id = -(++flushSeq) // negative: never one of the primary's request ids
    const done = (): void => { clearTimeout(timer); process.off('message', onMessage); resolve() }
    const onMessage = (raw: unknown): void => { if (isPrimaryMessage(raw) && raw.type === 'reply' && raw.id === id) done() }
    const timer = setTimeout(done, timeout)
    process.on('message', onMessage)
    process.send(message<RequestMessage>({ type: 'request', id, channel: FLUSH_CHANNEL }), undefined, undefined, (err) => { if (err !== null) done() })
  })
  await roundTrip()
  await roundTrip()
}
