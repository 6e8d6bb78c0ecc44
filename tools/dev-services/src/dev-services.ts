/**
 * `pnpm start` (repository root) runs this: Postgres and Redis for the example API, found or started
 * (launcher.ts), then the example's cluster. Development tooling only, never published and never in
 * the example's image: production and Kubernetes set DATABASE_URL, REDIS_URL and JWT_SECRET and run
 * `node dist/server.js` of the example directly. Environment of the launcher itself:
 *   NCLUST_DEV_DIR        state folder (default tools/dev-services/.nclust)
 *   NCLUST_DEV_PG_PORT    where a local Postgres is looked for, and the embedded one's preferred port (5432)
 *   NCLUST_DEV_REDIS_PORT the same for Redis (6379)
 *   NCLUST_DEV_PG_USER    as root, the unprivileged user Postgres and Redis run as (nclust)
 *   NCLUST_DEV_DATA_BASE  as root, the root-owned folder holding their data and the binaries copy (/var/lib/nclust-dev)
 */
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { exampleApp } from './app.js'
import { DevLauncher } from './launcher.js'

const stateDir = resolve(process.env['NCLUST_DEV_DIR'] ?? fileURLToPath(new URL('../.nclust', import.meta.url)))
const launcher = new DevLauncher(exampleApp, stateDir)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => launcher.onSignal(signal))
launcher.run().catch(async (err: unknown) => await launcher.fail(err))
