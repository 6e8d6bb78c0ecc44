import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { Server as NetServer } from 'node:net'
import { Drainer } from './drain.js'
import { resolveOptions, ServerOptionError } from './options.js'
import type { DrainOptions } from './types.js'

/** Fastify keeps its constructor options under a private symbol; the only way to read return503OnClosing. */
function serverOption (fastify: FastifyInstance, name: string): unknown {
  for (let o: object | null = fastify; o !== null; o = Object.getPrototypeOf(o)) {
    for (const sym of Object.getOwnPropertySymbols(o)) {
      if (sym.description === 'fastify.options') {
        const options = (o as Record<symbol, unknown>)[sym]
        return typeof options === 'object' && options !== null ? (options as Record<string, unknown>)[name] : undefined
      }
    }
  }
  return undefined
}

const drainPlugin: FastifyPluginAsync<DrainOptions> = async function drainPlugin (fastify, options) {
  const opts = resolveOptions(options)
  if (fastify.hasDecorator('drain')) {
    throw new ServerOptionError('registered twice on the same app (fastify.drain exists): register it once, at the root')
  }
  // Fastify flags itself closing before any preClose hook runs, and from then on answers every request
  // 503 unless return503OnClosing is false, which would turn the whole drain into 503s.
  if (serverOption(fastify, 'return503OnClosing') !== false) {
    throw new ServerOptionError(
      'the server option return503OnClosing is ' + String(serverOption(fastify, 'return503OnClosing') ?? 'not set (default true)') +
      '; create the app with Fastify({ return503OnClosing: false }) so requests still arriving on open connections during the drain are served (with Connection: close) instead of answered 503')
  }

  const config = fastify.initialConfig
  const drainer = new Drainer(fastify.server as unknown as NetServer, opts, opts.logger ?? fastify.log, {
    http2: config.http2 === true,
    https: Boolean(config.https)
  })

  fastify.decorate('drain', drainer.state)
  fastify.decorateRequest('drainSignal', { getter () { return drainer.controller.signal } })
  fastify.addHook('onReady', async () => { drainer.tracker.watchUpgrades() })
  fastify.addHook('preClose', () => drainer.start())

  if (opts.readinessPath !== null) {
    fastify.get(opts.readinessPath, { logLevel: 'warn' }, async (_req, reply) => {
      if (drainer.phase === 'serving') return { status: 'ready' }
      return reply.code(503).header('retry-after', String(opts.retryAfter)).send({ status: 'draining' })
    })
  }
}

/** Drains the app on `app.close()`: see README. Register once, at the root. */
export const clusterDrain = fp(drainPlugin, { name: '@nclust/fastify-drain', fastify: '5.x' })
