import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import type { Server as NetServer } from 'node:net'
import { Drainer } from './drain.js'
import { resolveOptions } from './options.js'
import { errors } from './errors.js'
import type { DrainOptions } from './types.js'

const drainPlugin: FastifyPluginAsync<DrainOptions> = async function drainPlugin (fastify, options) {
  const opts = resolveOptions(options)
  if (fastify.hasDecorator('drain')) {
    throw new errors.NCLUST_DRAIN_SERVER_OPTION('registered twice on the same app (fastify.drain exists): register it once, at the root')
  }
  const config = fastify.initialConfig
  const drainer = new Drainer(fastify.server as unknown as NetServer, opts, opts.logger ?? fastify.log, {
    http2: config.http2 === true,
    https: Boolean(config.https),
    allowHTTP1: typeof config.https === 'object' && config.https !== null && (config.https as { allowHTTP1?: unknown }).allowHTTP1 === true
  }, () => fastify.hasDecorator('websocketServer') ? (fastify as unknown as { websocketServer: unknown }).websocketServer : undefined)

  fastify.decorate('drain', drainer.state)
  fastify.decorateRequest('drainSignal', { getter () { return drainer.controller.signal } })
  fastify.addHook('onReady', async () => { drainer.tracker.watchUpgrades() })
  // Fastify flags itself closing before any preClose hook runs, and then (with its default
  // return503OnClosing: true) answers 503 to every request still arriving on an open connection.
  // drainAndClose() drains while Fastify still serves, then closes: the zero-503 path for any app.
  // The preClose hook keeps a plain app.close() draining too (with Fastify's 503s for late requests
  // on a default app). start() is idempotent: both paths share one drain.
  fastify.addHook('preClose', () => drainer.start())
  let closing: Promise<void> | undefined
  fastify.decorate('drainAndClose', function drainAndClose (options?: { restart?: boolean }) {
    closing ??= drainer.start(options?.restart === true).then(async () => { await fastify.close() })
    return closing
  })

  if (opts.readinessPath !== null) {
    fastify.get(opts.readinessPath, { logLevel: 'warn' }, async (_req, reply) => {
      if (drainer.phase === 'serving') return { status: 'ready' }
      return reply.code(503).header('retry-after', String(opts.retryAfter)).send({ status: 'draining' })
    })
  }
}

/** Drains the app on `app.close()`: see README. Register once, at the root. */
export const clusterDrain = fp(drainPlugin, { name: '@nclust/fastify-drain', fastify: '5.x' })
