import cluster from 'node:cluster'
import { startClustered } from '@nclust/fastify-cluster'
import { clusterMetrics } from '@nclust/fastify-pidmetrics'
import { pino, type Logger } from 'pino'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, poolSizePerWorker, type Config } from './config.js'
import { migrate } from './db.js'

/**
 * Entry point (`pnpm start`). This file runs in the primary AND in every forked worker:
 * - primary: validate the env (JWT_SECRET, DATABASE_URL and REDIS_URL are required whatever NODE_ENV
 *   says: this entry never generates a secret; the dev launcher src/dev.ts does, for development),
 *   run the migrations once, then `startClustered` forks the workers and serves the cluster-wide /metrics;
 * - worker: validate the env again (it is the same env) and build the app; `startClustered` listens.
 */
function configOrExit (): Config {
  try {
    return loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`${err.message}. See examples/clustered-api/README.md for every variable; for local development the dev launcher (src/dev.ts) sets them.`)
      process.exit(1)
    }
    throw err
  }
}

const config = configOrExit()

// `startClustered` decides the role, but the primary can already be told apart here: it is the
// process that was not forked by node:cluster (in single mode, WORKER_COUNT=1, it is the only one).
if (cluster.isPrimary) {
  const log = pino({ level: config.logLevel }).child({ role: 'primary' })
  await migrateOrExit(config, log)
  log.info({ workers: config.workers, poolPerWorker: poolSizePerWorker(config.pgPoolTotal, config.workers), pgPoolTotal: config.pgPoolTotal },
    config.workers === 1 ? 'starting in single-process mode' : 'starting workers')
}

const handle = await startClustered((ctx) => buildApp(ctx, config), {
  workers: config.workers,
  port: config.port,
  host: config.host,
  shutdownTimeout: config.shutdownTimeout,
  // On shutdown each worker first keeps serving for DRAIN_DELAY with /health already 503, so a load
  // balancer probing it takes it out of rotation before its listener closes.
  drain: { delay: config.drainDelay }
})

// The cluster-wide scrape: the primary asks every worker over IPC and serves one exposition with a
// pid/worker label per series on METRICS_PORT (closed by the cluster's shutdown). In a worker or in
// single mode it serves nothing (single mode serves its own registry on METRICS_PORT: src/metrics.ts).
// Failing to serve it (port taken) is logged loudly but does not take the API down with it.
try {
  const metrics = await clusterMetrics(handle, config.metricsPort === null
    ? { enabled: false }
    : { port: config.metricsPort, host: config.metricsHost })
  if (metrics.enabled) {
    pino({ level: config.logLevel }).child({ role: 'primary' }).info({ url: metrics.url }, 'cluster metrics listening')
  }
} catch (err) {
  pino({ level: config.logLevel }).child({ role: 'primary' }).error({ err, port: config.metricsPort },
    'cluster metrics NOT served (is METRICS_PORT taken?); the API and each worker\'s /metrics keep running')
}

/**
 * Migrations run here, in the primary, before any worker exists: once per start whatever the worker
 * count, never again when a crashed worker is replaced, and a failure stops the start before
 * anything listens. The advisory lock inside `migrate` covers several machines starting at once.
 */
async function migrateOrExit (cfg: Config, log: Logger): Promise<void> {
  try {
    const result = await migrate(cfg.databaseUrl, cfg.pgSchema, (msg) => log.info(msg))
    log.info({ schema: cfg.pgSchema, ...result }, 'migrations done')
  } catch (err) {
    log.fatal({ err }, 'migrations failed: is Postgres reachable at DATABASE_URL?')
    process.exit(1)
  }
}
