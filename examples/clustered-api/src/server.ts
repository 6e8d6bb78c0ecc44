import cluster from 'node:cluster'
import { fork } from 'node:child_process'
import { startClustered, type ClusterOptions } from '@nclust/fastify-cluster'
import type { Settings } from './preflight.js'

/**
 * The cluster entry (production and Kubernetes run `node dist/server.js`). It runs in the primary and,
 * re-run by node:cluster, in every worker, but the app is given as a module (`app.js`, which exports
 * `buildApp`) that only workers import: the primary stays lean. What the primary must do before
 * forking (validate the env, migrate) runs in a short-lived child, preflight.js.
 */
async function primarySettings (): Promise<Settings> {
  const child = fork(new URL('./preflight.js', import.meta.url), { stdio: 'inherit' })
  let settings: Settings | undefined
  child.on('message', (m) => { settings = m as Settings })
  const code = await new Promise<number>((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal !== null ? 1 : 0))))
  // preflight printed why (a bad variable, Postgres unreachable): exit with its code, nothing forked.
  if (code !== 0 || settings === undefined) process.exit(code === 0 ? 1 : code)
  // No secret is generated here: JWT_SECRET comes from the env (required by preflight whatever NODE_ENV
  // says), which node:cluster copies into every worker. Only the dev launcher (tools/dev-services) makes one.
  return settings
}

/** In a worker the env was validated by the primary's preflight; read the same settings from it. */
async function workerSettings (): Promise<Settings> {
  const { loadConfig } = await import('./config.js')
  return loadConfig()
}

const settings = cluster.isPrimary ? await primarySettings() : await workerSettings()
const options: ClusterOptions = {
  workers: settings.workers,
  port: settings.port,
  host: settings.host,
  shutdownTimeout: settings.shutdownTimeout,
  logger: { level: settings.logLevel },
  // On shutdown each worker first keeps serving for DRAIN_DELAY with /health already 503, so a load
  // balancer probing it takes it out of rotation before its listener closes.
  drain: { delay: settings.drainDelay }
}
const handle = await startClustered(new URL('./app.js', import.meta.url), options)

// The cluster-wide scrape: the primary asks every worker over IPC and serves one exposition with a
// pid/worker label per series on METRICS_PORT (closed by the cluster's shutdown). In a worker or in
// single mode it serves nothing (single mode serves its own registry on METRICS_PORT: src/metrics.ts).
// Failing to serve it (port taken) is logged loudly but does not take the API down with it.
if (handle.role === 'primary' && settings.metricsPort !== null) {
  const log = handle.logger
  try {
    const { clusterMetrics } = await import('@nclust/fastify-pidmetrics/cluster')
    const metrics = await clusterMetrics(handle, { port: settings.metricsPort, host: settings.metricsHost })
    log.info({ url: metrics.url }, 'cluster metrics listening')
  } catch (err) {
    log.error({ err, port: settings.metricsPort }, 'cluster metrics NOT served (is METRICS_PORT taken?); the API keeps running')
  }
}
