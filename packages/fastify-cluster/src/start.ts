import cluster from 'node:cluster'
import type { Server } from 'node:net'
import type { BuildApp, ClusterHandle, PrimaryHandle } from './types.js'
import type { ResolvedOptions } from './options.js'
import { errors } from './errors.js'
import { WORKER_ENV } from './messages.js'
import { resolveAppModule, type AppSource } from './app-module.js'
import { startSupervisor } from './primary/supervisor.js'

/** The app's module URL (checked to exist), or undefined for a `buildApp` function; throws for anything else. */
export function appModuleOf (app: AppSource): URL | undefined {
  if (typeof app === 'string' || app instanceof URL) return resolveAppModule(app)
  if (typeof app !== 'function') {
    throw new errors.NCLUST_CLUSTER_INVALID_APP(`app must be a function (ctx) => FastifyInstance, a module path or a file: URL, got ${app === null ? 'null' : typeof app}`)
  }
  return undefined
}

/**
 * Start this process's role with options resolved once (by `startClustered`, or by the `nclust`
 * CLI with its flags): primary, worker or single.
 */
export async function startResolved (app: AppSource, moduleUrl: URL | undefined, resolved: ResolvedOptions): Promise<ClusterHandle> {
  const role = cluster.isWorker && process.env[WORKER_ENV.id] !== undefined ? 'worker' : resolved.workers === 1 ? 'single' : 'primary'
  if (role === 'primary') {
    // Sockets from systemd or an upgrading primary, and the listener the primary owns (primary/sockets.ts).
    const { preparePrimary, wirePrimary, adoptControl } = await import('./primary/sockets.js')
    let prepared
    try {
      prepared = await preparePrimary(resolved)
    } catch (err) {
      // A taken port or a bad inherited socket, before anything is forked: one line and exit 1, or,
      // for an embedder that handles signals and exits itself (handleSignals: false), a rejection.
      if (!resolved.handleSignals) throw err
      exitWithOneLine(err)
    }
    // The control socket is claimed before anything is forked: a second start on a live socket exits 1.
    const controlFd = prepared.controlFd
    const control = resolved.control === false
      ? undefined
      : await claimControlSocket(resolved.control, resolved.controlIsDefault, controlFd === undefined ? undefined : async () => await adoptControl(controlFd, prepared.upgraded))
    const handle = startSupervisor(resolved, undefined, resolved.balance === 'sticky' ? prepared.owned?.servers : undefined)
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
    if (!isDefault || (err as { code?: string }).code !== 'NCLUST_CLUSTER_CONTROL_PATH') exitWithOneLine(err)
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

/** Validation errors: one line on stderr, `nclust: <code>: <message>`, and exit 1 (a top-level await rejection would print a stack). */
export function exitWithOneLine (err: unknown): never {
  const e = err as Error & { code?: string }
  process.stderr.write(`nclust: ${e.code ?? 'Error'}: ${e.message}\n`)
  process.exit(1)
}
