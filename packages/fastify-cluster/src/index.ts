import cluster from 'node:cluster'
import type { Server } from 'node:net'
import type { BuildApp, ClusterHandle, PrimaryHandle } from './types.js'
import { resolveOptions, type ClusterOptions, type ResolvedOptions } from './options.js'
import { errors } from './errors.js'
import { WORKER_ENV } from './messages.js'
import { resolveAppModule, type AppSource } from './app-module.js'
import { startSupervisor } from './primary/supervisor.js'
import { startSticky } from './primary/sticky.js'

export type * from './types.js'
export type { AppSource } from './app-module.js'
export type { LogFormat } from './logger.js'
export type { ClusterOptions, ResolvedOptions, HangProbe } from './options.js'
export type { BackoffPolicy, CrashLoopPolicy } from './primary/backoff.js'
export type { NclustMessage, WorkerToPrimary, PrimaryToWorker } from './messages.js'
export { resolveOptions, OPTION_TABLE, DEFAULTS, minShutdownTimeout } from './options.js'
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
    if (typeof app === 'string' || app instanceof URL) moduleUrl = resolveAppModule(app)
    else if (typeof app !== 'function') {
      throw new errors.NCLUST_INVALID_OPTION(`invalid app: got ${app === null ? 'null' : typeof app}, expected a function (ctx) => FastifyInstance, a module path or a file: URL`)
    }
    resolved = resolveOptions(options)
  } catch (err) {
    exitWithOneLine(err)
  }
  const role = cluster.isWorker && process.env[WORKER_ENV.id] !== undefined ? 'worker' : resolved.workers === 1 ? 'single' : 'primary'
  if (role === 'primary') {
    // Sockets from systemd or an upgrading primary, and the listener the primary owns (primary/sockets.ts).
    const { preparePrimary, wirePrimary, adoptControl } = await import('./primary/sockets.js')
    let prepared
    try { prepared = await preparePrimary(resolved) } catch (err) { exitWithOneLine(err) }
    // The control socket is claimed before anything is forked: a second start on a live socket exits 1.
    const control = resolved.control === false ? undefined : await claimControlSocket(resolved.control, resolved.controlIsDefault, prepared.controlFd === undefined ? undefined : async () => await adoptControl(prepared.controlFd as number, prepared.upgraded))
    const handle = startSupervisor(resolved)
    if (resolved.balance === 'sticky' && prepared.owned === undefined) startSticky(handle, resolved)
    control?.serve(handle, resolved)
    wirePrimary(handle, resolved, prepared, control?.server)
    return handle
  }

  // Worker and single mode only: the app, the drain and Fastify are never loaded by the primary.
  // A module is imported as part of building the app, so an import error or a module of the wrong
  // shape is a failed start like any other: reported to the primary with its stack.
  const buildApp: BuildApp = moduleUrl === undefined ? app as BuildApp : fromModule(moduleUrl)
  if (role === 'worker') {
    const { runWorker } = await import('./worker/worker.js')
    return await runWorker(buildApp, resolved)
  }
  const { runSingle } = await import('./single.js')
  return await runSingle(buildApp, resolved)
}

async function claimControlSocket (path: string, isDefault: boolean, adopt?: () => Promise<Server>): Promise<{ server: Server, serve: (handle: PrimaryHandle, options: ResolvedOptions) => void } | undefined> {
  const { claimControl, serveControl } = await import('./primary/control.js')
  let server: Server
  try {
    server = adopt !== undefined ? await adopt() : await claimControl(path)
  } catch (err) {
    // The default folder may be out of reach (a container user with HOME=/ and a read-only root):
    // the cluster runs as before, without the socket. A path the operator chose, or a socket a
    // running cluster holds, still ends the start.
    if (!isDefault || (err as { code?: string }).code !== 'NCLUST_INVALID_OPTION') exitWithOneLine(err)
    process.stderr.write(`nclust: control socket off: ${(err as Error).message} (set NCLUST_CONTROL or --control to a private folder, or false)\n`)
    return undefined
  }
  return { server, serve: (handle, options) => serveControl(server, path, handle, options) }
}

function fromModule (url: URL): BuildApp {
  return async (ctx) => {
    const { loadAppModule } = await import('./app-module.js')
    return await (await loadAppModule(url))(ctx)
  }
}

/** Validation errors: one line on stderr and exit 1 (a top-level await rejection would print a stack). */
function exitWithOneLine (err: unknown): never {
  const e = err as Error & { code?: string }
  process.stderr.write(`nclust: ${e.code ?? 'Error'}: ${e.message}\n`)
  process.exit(1)
}
