import type { BuildApp, SingleHandle, WorkerContext } from './types.js'
import type { ResolvedOptions } from './options.js'
import { createLogger } from './logger.js'
import { setCurrentWorker } from './worker/channel.js'
import { buildAndListen, createLifecycle, installFatalHandlers } from './worker/lifecycle.js'

/**
 * `workers: 1`: the app runs in this process, no fork, no IPC. Same signals and shutdown as a
 * cluster: SIGTERM/SIGINT drain and exit 0, a second signal exits 1 at once, a fatal error drains
 * and exits 1, the deadline exits 1. This is the mode for one process per container, where the
 * orchestrator does the restarting and the scaling.
 */
export async function runSingle (buildApp: BuildApp, options: ResolvedOptions): Promise<SingleHandle> {
  const log = createLogger(options.logger, 'single', options.logFormat).child({ workerId: 0 })
  const context: WorkerContext = { workerId: 0, workers: 1, generation: 0, single: true, logger: log }
  setCurrentWorker(context)

  let exitOnStop = false
  const lifecycle = createLifecycle(log, options.shutdownTimeout, (code) => {
    if (exitOnStop) process.exit(code)
  })
  if (options.handleSignals) {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.on(signal, () => {
        if (lifecycle.stopping) {
          log.warn({ signal }, 'second signal during shutdown: exiting now')
          process.exit(1)
        }
        exitOnStop = true
        void lifecycle.stop(0, 'signal', signal)
      })
    }
    // A fatal error ends the process (exit 1 after draining): the orchestrator restarts it.
    installFatalHandlers(log, lifecycle, () => { exitOnStop = true })
  }

  const started = Date.now()
  let built: Awaited<ReturnType<typeof buildAndListen>>
  try {
    built = await buildAndListen(buildApp, context, options)
  } catch (err) {
    if (!options.handleSignals) throw err // an embedder owns the process: let it decide
    // Nothing to retry in-process (the orchestrator restarts the container): say it once, with the stack.
    log.fatal({ err }, `could not start: ${err instanceof Error ? err.message : String(err)}; exit 1`)
    process.exit(1)
  }
  const { app, address } = built
  lifecycle.setApp(app)
  log.info({ address, ms: Date.now() - started }, 'single-process mode ready (no fork)')
  return {
    role: 'single',
    app,
    context,
    close: async () => { await lifecycle.stop(0, 'close') }
  }
}
