import Fastify, { type FastifyInstance } from 'fastify'
import { pidMetrics, SCRAPE_SERVER_LIMITS } from '@nclust/fastify-pidmetrics'
import type { Config } from './config.js'

/**
 * Where this worker's metrics can be read. Never on the app port: `/metrics` shows pids, Node
 * versions and per-route, per-status counts (the 401 rate of /login included), which is not for the
 * internet, and behind a clustered port a scrape lands on a random worker anyway.
 *
 * - Several workers: no endpoint at all; the primary collects every worker's registry over IPC and
 *   serves the one cluster scrape on METRICS_HOST:METRICS_PORT (server.ts, `clusterMetrics`).
 * - Single process (WORKER_COUNT=1): there is no primary to ask, so this process serves its own
 *   registry on METRICS_HOST:METRICS_PORT, a second small Fastify server: the scrape target is the
 *   same address in both modes.
 * - METRICS_PORT=off: nothing is served (the metrics are still recorded).
 */
export async function registerMetrics (app: FastifyInstance, single: boolean, config: Config): Promise<void> {
  // Registered before the rate limiter in app.ts, as before: recording never touches Redis.
  await app.register(pidMetrics, { endpoint: false })
  if (!single || config.metricsPort === null) return

  // The primary's scrape server's limits (connection cap, header/request timeouts, keep-alive), so both
  // modes' scrape targets behave the same: a scraper needs one connection, nothing slow or numerous gets in.
  const limits = SCRAPE_SERVER_LIMITS
  const metrics = Fastify({
    loggerInstance: app.log.child({ server: 'metrics' }),
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    http: { headersTimeout: limits.headersTimeout, requestTimeout: limits.requestTimeout, connectionsCheckingInterval: 1000 }
  })
  metrics.server.maxConnections = limits.maxConnections
  metrics.get('/metrics', async (_request, reply) => {
    const { registry } = app.pidMetrics
    return reply.type(registry.contentType).send(await registry.metrics())
  })
  const port = config.metricsPort
  app.addHook('onReady', async () => {
    try {
      const url = await metrics.listen({ port, host: config.metricsHost })
      app.log.info({ url: `${url}/metrics` }, 'metrics listening (single-process mode)')
    } catch (err) {
      // Like the primary's cluster scrape: a taken port is loud in the log but does not take the API down.
      app.log.error({ err, port }, 'metrics NOT served (is METRICS_PORT taken?); the API keeps running')
    }
  })
  app.addHook('onClose', async () => { await metrics.close() })
}
