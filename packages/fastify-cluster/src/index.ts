import type { ClusterHandle } from './types.js'
import { resolveOptions, type ClusterOptions, type ResolvedOptions } from './options.js'
import type { AppSource } from './app-module.js'
import { appModuleOf, exitWithOneLine, startResolved } from './start.js'

export type * from './types.js'
export type { AppSource } from './app-module.js'
export type { LogFormat } from './logger.js'
export type { ClusterOptions, ResolvedOptions, HangProbe } from './options.js'
export type { BackoffPolicy, CrashLoopPolicy } from './primary/backoff.js'
export type { NclustMessage, WorkerToPrimary, PrimaryToWorker } from './messages.js'
export { resolveOptions, SETTINGS, MAX_WORKERS, minShutdownTimeout, type Setting, type SettingName } from './options.js'
export { errors } from './errors.js'
export { EXIT_REASONS, RESTART_REASONS, SHUTDOWN_REASONS } from './reasons.js'
export { kernelBalanceUnsupported, type Balance } from './balance.js'
export { defaultWorkerCount, cgroupCpuQuota, type WorkerCountChoice, type WorkerCountInput } from './cgroup.js'
export { onPrimaryRequest, currentWorker } from './worker/channel.js'

/**
 * Run a Fastify app on every core. One entry script, three roles:
 * - primary (`workers > 1`, not a worker): forks and supervises workers, never builds the app; returns a {@link PrimaryHandle};
 * - worker (forked by the primary): builds the app, listens, reports ready; returns a {@link WorkerHandle};
 * - single (`workers: 1` / `WORKER_COUNT=1`): builds and serves in this process, no fork; returns a {@link SingleHandle}.
 *
 * `app` is either a `buildApp(ctx)` function, or the app as a module (`new URL('./app.js',
 * import.meta.url)`, or a path relative to the working directory): a fastify-cli style plugin module
 * or one that exports `buildApp`. A module is imported only by workers, so the primary stays lean;
 * a function means the primary has imported whatever the entry script imports.
 *
 * Invalid options or env vars end the process before anything is forked: one line on stderr
 * naming the option or variable, the bad value and what is allowed, and exit code 1. Call
 * {@link resolveOptions} first to validate without exiting.
 */
export async function startClustered (app: AppSource, options: ClusterOptions = {}): Promise<ClusterHandle> {
  let resolved: ResolvedOptions
  let moduleUrl: URL | undefined
  try {
    moduleUrl = appModuleOf(app)
    resolved = resolveOptions(options)
  } catch (err) {
    exitWithOneLine(err)
  }
  return await startResolved(app, moduleUrl, resolved)
}
