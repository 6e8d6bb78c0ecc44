import { pino } from 'pino'
import { ConfigError, loadConfig, poolSizePerWorker } from './config.js'
import { migrate } from './db.js'

/**
 * What the primary needs before it forks, done in a short-lived child process (`server.ts` forks it)
 * so that the primary never loads the config validator (env-schema, Ajv) or the Postgres client:
 * the lean-primary budget is a few MB over a bare node:cluster primary, and those alone are more.
 *
 * 1. validate the env: a bad value is one line naming it, exit 1, before anything listens;
 *    (JWT_SECRET, DATABASE_URL and REDIS_URL are required whatever NODE_ENV says: no secret is ever
 *    generated here; the dev launcher, tools/dev-services, makes one for development and passes it in the env);
 * 2. run the migrations once per start, under the advisory lock `migrate` takes (several machines
 *    may start at once), never again when a crashed worker is replaced.
 * It answers the settings the primary starts the cluster with, over IPC, and exits 0.
 */
export interface Settings {
  workers: number
  port: number
  host: string
  shutdownTimeout: number
  drainDelay: number
  logLevel: string
  metricsPort: number | null
  metricsHost: string
}

let config
try {
  config = loadConfig()
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}. See examples/clustered-api/README.md for every variable; for local development the dev launcher (pnpm start at the repository root) sets them.\n`)
    process.exit(1)
  }
  throw err
}
const log = pino({ level: config.logLevel }).child({ role: 'preflight' })

try {
  const result = await migrate(config.databaseUrl, config.pgSchema, (msg) => log.info(msg))
  log.info({ schema: config.pgSchema, ...result }, 'migrations done')
} catch (err) {
  log.fatal({ err }, 'migrations failed: is Postgres reachable at DATABASE_URL?')
  process.exit(1)
}

log.info({ workers: config.workers, poolPerWorker: poolSizePerWorker(config.pgPoolTotal, config.workers), pgPoolTotal: config.pgPoolTotal },
  config.workers === 1 ? 'starting in single-process mode' : 'starting workers')
const settings: Settings = {
  workers: config.workers,
  port: config.port,
  host: config.host,
  shutdownTimeout: config.shutdownTimeout,
  drainDelay: config.drainDelay,
  logLevel: config.logLevel,
  metricsPort: config.metricsPort,
  metricsHost: config.metricsHost
}
process.send?.(settings, () => process.exit(0))
