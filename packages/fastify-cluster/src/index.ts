import cluster from 'node:cluster'
import type { BuildApp, ClusterHandle } from './types.js'
import { resolveOptions, type ClusterOptions, type ResolvedOptions } from './options.js'
import { errors } from './errors.js'
import { startSupervisor } from './primary/supervisor.js'
import { runWorker, WORKER_ENV } from './worker/worker.js'
import { runSingle } from './single.js'

export type * from './types.js'
export type { ClusterOptions, ResolvedOptions } from './options.js'
export type { BackoffPolicy, CrashLoopPolicy } from './primary/backoff.js'
export type { NclustMessage, WorkerToPrimary, PrimaryToWorker } from './messages.js'
export { resolveOptions, OPTION_TABLE, DEFAULTS } from './options.js'
export { errors } from './errors.js'
export { kernelBalanceUnsupported, type Balance } from './balance.js'
export { defaultWorkerCount, cgroupCpuQuota, type WorkerCountChoice, type WorkerCountInput } from './cgroup.js'
export { onPrimaryRequest, currentWorker } from './worker/channel.js'

/**
 * Run `buildApp` on every core. One entry script, three roles:
 * - primary (`workers > 1`, not a worker): forks and supervises workers, never builds the app; returns a {@link PrimaryHandle};
 * - worker (forked by the primary): builds the app, listens, reports ready; returns a {@link WorkerHandle};
 * - single (`workers: 1` / `WORKER_COUNT=1`): builds and serves in this process, no fork; returns a {@link SingleHandle}.
 *
 * Invalid options or env vars end the process before anything is forked: one line on stderr
 * naming the option or variable, the bad value and what is allowed, and exit code 1. Call
 * {@link resolveOptions} first to validate without exiting.
 */
export async function startClustered (buildApp: BuildApp, options: ClusterOptions = {}): Promise<ClusterHandle> {
  let resolved: ResolvedOptions
  try {
    if (typeof buildApp !== 'function') {
      throw new errors.NCLUST_INVALID_OPTION(`invalid buildApp: got ${typeof buildApp}, expected a function (ctx) => FastifyInstance`)
    }
    resolved = resolveOptions(options)
  } catch (err) {
    const e = err as Error & { code?: string }
    process.stderr.write(`nclust: ${e.code ?? 'Error'}: ${e.message}\n`)
    process.exit(1)
  }
  if (cluster.isWorker && process.env[WORKER_ENV.id] !== undefined) return await runWorker(buildApp, resolved)
  if (resolved.workers === 1) return await runSingle(buildApp, resolved)
  return startSupervisor(resolved)
}
