/**
 * The app this launcher runs, examples/clustered-api, and everything the launcher knows about it:
 * where its cluster entry is, and its own validation of the environment, so a bad variable stops the
 * launcher before any server starts, with the very line the cluster would print.
 */
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig } from '@nclust/example-clustered-api/dist/config.js'
import { DevError } from './processes.js'

export interface AppSettings { workers: number, port: number, host: string, metrics: string | null }

export interface DevApp {
  /** The cluster entry, run as `node <entry>` with DATABASE_URL, REDIS_URL and JWT_SECRET in its env. */
  entry: string
  /** The app's settings read from `env`; throws a DevError naming a bad variable. */
  settings: (env: NodeJS.ProcessEnv) => AppSettings
}

export const exampleApp: DevApp = {
  // The example's `main` (dist/server.js), by its real path: the orphan check matches it in a command line.
  entry: fileURLToPath(import.meta.resolve('@nclust/example-clustered-api')),
  settings (env) {
    try {
      const c = loadConfig(env)
      return { workers: c.workers, port: c.port, host: c.host, metrics: c.metricsPort === null ? null : `http://${c.metricsHost}:${c.metricsPort}/metrics` }
    } catch (err) {
      if (err instanceof ConfigError) throw new DevError(err.message)
      throw err
    }
  }
}
