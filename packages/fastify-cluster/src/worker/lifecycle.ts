import type { FastifyInstance, FastifyListenOptions } from 'fastify'
import type { Logger } from 'pino'
import clusterDrain from '@nclust/fastify-drain'
import type { BuildApp, WorkerContext } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { errors } from '../errors.js'
import { acceptFromPrimary, offerListener, slotListener } from './listener.js'
import { markStopping } from './owned-accept.js'

/**
 * What a worker and the single-process mode share: build the app, register the drain, listen;
 * and stop exactly once, gracefully, within a deadline, whatever asked for it (a signal, the
 * primary, a fatal error, the primary going away).
 */

export async function buildAndListen (buildApp: BuildApp, ctx: WorkerContext, options: ResolvedOptions): Promise<{ app: FastifyInstance, address: string | null }> {
  const app = await buildApp(ctx)
  if (app === null || typeof app !== 'object' || typeof app.listen !== 'function' || typeof app.close !== 'function') {
    throw new errors.NCLUST_CLUSTER_INVALID_APP(`buildApp must return a Fastify instance (without calling listen), got ${app === null ? 'null' : typeof app}`)
  }
  if (options.drain !== false && !app.hasPlugin('@nclust/fastify-drain')) {
    await app.register(clusterDrain, options.drain)
  }
  let address: string
  if (process.env.NCLUST_ACCEPT_FROM_PRIMARY === '1' && !ctx.single) {
    // balance 'primary': the primary owns the listener (../primary/owned-listener.ts: an inherited or
    // upgradable socket) and hands this worker connections; it listens privately so onListen hooks run.
    const owned = await import('./owned-accept.js')
    await owned.listenPrivately(app)
    owned.acceptOwned(app)
    return { app, address: process.env.NCLUST_LISTEN_ADDRESS ?? null }
  }
  if (options.balance === 'sticky' && !ctx.single) {
    // The primary owns the listener (../primary/sticky.ts) and hands this worker its clients' connections: no listen here.
    await app.ready()
    acceptFromPrimary(app, ctx.logger)
    return { app, address: null }
  }
  if (options.balance === 'kernel' && !ctx.single) {
    // SO_REUSEPORT: the worker listens itself (node:cluster binds in the worker instead of asking the
    // primary for its round-robin handle), on its slot's socket when an earlier generation opened one.
    const handle = await slotListener()
    if (handle !== undefined) {
      address = await app.listen({ handle, host: options.host } as unknown as FastifyListenOptions)
    } else {
      address = await app.listen({ port: options.port, host: options.host, reusePort: true } as FastifyListenOptions)
      offerListener(app)
    }
  } else {
    address = await app.listen({ port: options.port, host: options.host })
  }
  return { app, address: typeof address === 'string' ? address : null }
}

export type StopReason = 'shutdown' | 'signal' | 'close' | 'primary-gone' | 'uncaughtException' | 'unhandledRejection' | 'startFailed'

export interface Lifecycle {
  setApp (app: FastifyInstance): void
  /** Close the app once, then `exit(code)`; a second call returns the first call's promise. */
  stop (code: number, reason: StopReason, detail?: string): Promise<number>
  readonly stopping: boolean
}

/**
 * @param exit called once with the final code: `process.exit` in production, a no-op for an
 *   embedder's `close()`. The deadline exits with 1 even if `app.close()` never resolves.
 */
export function createLifecycle (log: Logger, deadline: number, exit: (code: number) => void): Lifecycle {
  let app: FastifyInstance | undefined
  let stopped: Promise<number> | undefined

  return {
    setApp (a) { app = a },
    get stopping () { return stopped !== undefined },
    stop (code, reason, detail) {
      if (stopped !== undefined) return stopped
      markStopping() // a connection the primary hands over from now on goes back (owned-accept.ts)
      log.info({ reason, detail, deadline }, 'closing: draining in-flight requests')
      const started = Date.now()
      stopped = new Promise<number>((resolve) => {
        const timer = setTimeout(() => {
          log.error({ reason, deadline }, `app.close() did not finish within ${deadline}ms; exiting`)
          resolve(1)
        }, deadline)
        const closing = app === undefined ? Promise.resolve() : closeApp(app, reason === 'shutdown' && (detail === 'reload' || detail === 'recycle'))
        closing.then(() => {
          clearTimeout(timer)
          log.info({ reason, ms: Date.now() - started }, 'closed')
          resolve(code)
        }, (err: unknown) => {
          clearTimeout(timer)
          log.error({ err, reason }, 'app.close() failed')
          resolve(1)
        })
      }).then((final) => { exit(final); return final })
      return stopped
    }
  }
}

/**
 * The worker owns the shutdown, so it drains before it closes: Fastify flags itself closing (and a
 * default app answers 503) the moment `close()` starts, before any preClose hook. The drain plugin's
 * `drainAndClose()` serves what still arrives on open connections, then closes. Without the plugin
 * (`drain: false`) it is a plain `close()`. `restart`: this worker is being replaced (reload,
 * recycle), so its WebSockets get 1012 (service restart) rather than 1001 (going away).
 */
function closeApp (app: FastifyInstance, restart: boolean): Promise<void> {
  return app.hasDecorator('drainAndClose') ? app.drainAndClose({ restart }) : app.close()
}

/**
 * An uncaught exception or unhandled rejection: log it with its stack, tell `onFatal`, and stop
 * gracefully with exit code 1 (the primary replaces the worker; an orchestrator restarts a pod).
 */
export function installFatalHandlers (log: Logger, lifecycle: Lifecycle, onFatal?: (reason: 'uncaughtException' | 'unhandledRejection', err: unknown) => void): void {
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception: stopping this process')
    onFatal?.('uncaughtException', err)
    void lifecycle.stop(1, 'uncaughtException', err instanceof Error ? err.message : String(err))
  })
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled rejection: stopping this process')
    onFatal?.('unhandledRejection', reason)
    void lifecycle.stop(1, 'unhandledRejection', reason instanceof Error ? reason.message : String(reason))
  })
}
