import cluster from 'node:cluster'
import type { BuildApp, WorkerContext, WorkerHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { isPrimaryMessage, message, WORKER_ENV, type FatalMessage, type ReadyMessage } from '../messages.js'
import { installChannel, setCurrentWorker } from './channel.js'
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

  const send = (m: ReadyMessage | FatalMessage): void => {
    if (process.connected) process.send?.(m, undefined, undefined, () => {})
  }
  // The primary owns the deadline (it SIGKILLs at shutdownTimeout and says so). The worker's own
  // deadline is a backstop a second later, for when there is no primary left to do it.
  const lifecycle = createLifecycle(log, options.shutdownTimeout + 1000, (code) => process.exit(code))

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
    log.error({ err }, 'worker failed to start')
    send(message<FatalMessage>({ type: 'fatal', reason: 'startFailed', message: err instanceof Error ? err.message : String(err) }))
    await lifecycle.stop(1, 'startFailed')
    throw err // not reached: stop() exits the process
  }
  const { app, address } = built
  lifecycle.setApp(app)
  if (lifecycle.stopping) {
    // A shutdown arrived while the app was starting: close what we just opened.
    await app.close()
  } else {
    log.info({ address, ms: Date.now() - started, generation }, 'worker ready')
    send(message<ReadyMessage>({ type: 'ready', pid: process.pid, workerId, generation, address }))
  }
  return {
    role: 'worker',
    app,
    context,
    close: async () => { await lifecycle.stop(0, 'close') }
  }
}
