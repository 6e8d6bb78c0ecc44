import { existsSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { isAbsolute, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { FastifyInstance, FastifyPluginAsync, FastifyPluginCallback, FastifyServerOptions } from 'fastify'
import type { BuildApp, WorkerContext } from './types.js'
import { errors } from './errors.js'

/**
 * The app as a module: what `nclust start ./app.js` and `startClustered(new URL('./app.js',
 * import.meta.url))` take. Only workers (and single mode) import it; the primary only checks that
 * the file is there, so it never pays for the app's module graph.
 *
 * Two shapes, detected once, in the worker:
 * - a fastify-cli app: the default export (or `module.exports`) is a plugin
 *   `async function (fastify, opts)`; an optional `options` export holds the server options;
 * - a module exporting `buildApp(ctx)`, which returns a Fastify instance (without listening).
 */
export type AppSource = BuildApp | string | URL

/** A string is a path relative to the working directory (as `fastify start app.js` reads it), or a file: URL. */
export function resolveAppModule (source: string | URL, cwd: string = process.cwd()): URL {
  let url: URL
  if (source instanceof URL) url = source
  else if (source.startsWith('file:')) url = new URL(source)
  else url = pathToFileURL(isAbsolute(source) ? source : resolve(cwd, source))
  if (url.protocol !== 'file:') {
    throw new errors.NCLUST_CLUSTER_INVALID_APP(`app module ${String(source)}: expected a file path or a file: URL, got ${url.protocol}`)
  }
  const file = fileURLToPath(url)
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new errors.NCLUST_CLUSTER_INVALID_APP(`app module ${String(source)} not found (looked for ${file})`)
  }
  return url
}

type Plugin = FastifyPluginAsync | FastifyPluginCallback
interface AppModule {
  default?: unknown
  buildApp?: unknown
  options?: unknown
}

function isFunction (value: unknown): value is (...args: unknown[]) => unknown {
  return typeof value === 'function'
}

/** Import the module and turn it into a BuildApp, whichever of the two shapes it has. */
export async function loadAppModule (url: URL): Promise<BuildApp> {
  const mod = await import(url.href) as AppModule
  // CommonJS: module.exports is `default`; TypeScript's `exports.default = ...` nests one more level.
  let main = mod.default
  if (main !== null && typeof main === 'object' && isFunction((main as AppModule).default)) main = (main as AppModule).default
  const fromMain = (key: 'buildApp' | 'options'): unknown =>
    (main !== null && (typeof main === 'object' || typeof main === 'function')) ? (main as AppModule)[key] : undefined

  const buildApp = mod.buildApp ?? fromMain('buildApp')
  if (isFunction(buildApp)) return buildApp as BuildApp

  if (isFunction(main)) {
    const plugin = main as Plugin
    const serverOptions = mod.options ?? fromMain('options') ?? {}
    if (typeof serverOptions !== 'object' || serverOptions === null || Array.isArray(serverOptions)) {
      throw new errors.NCLUST_CLUSTER_INVALID_APP(`app module ${url.pathname}: its "options" export must be an object of Fastify server options`)
    }
    const Fastify = await importFastifyFor(url)
    // Imported here, in the worker: the primary resolves the module's path only and stays without it.
    const { default: fp } = await import('fastify-plugin')
    return async (ctx: WorkerContext): Promise<FastifyInstance> => {
      const options = serverOptions as FastifyServerOptions & { loggerInstance?: unknown }
      // The module's own logger settings win; otherwise the worker's logger (role, workerId, pid on every line).
      const ownLogger = options.logger !== undefined || options.loggerInstance !== undefined
      const app = Fastify(ownLogger ? options : { ...options, loggerInstance: ctx.logger }) as unknown as FastifyInstance
      // As fastify-cli does: the app plugin is not encapsulated, so what it decorates is on the root.
      await app.register(fp(plugin as FastifyPluginAsync), {})
      return app
    }
  }
  throw new errors.NCLUST_CLUSTER_INVALID_APP(
    `app module ${url.pathname} exports neither a Fastify plugin (export default async function (fastify, opts)) ` +
    'nor buildApp (export function buildApp (ctx) returning a Fastify instance)')
}

type FastifyFactory = (options?: FastifyServerOptions) => unknown

/** The `fastify` the app itself would import (its own node_modules first), like fastify-cli; ours otherwise. */
async function importFastifyFor (url: URL): Promise<FastifyFactory> {
  let specifier = 'fastify'
  try {
    specifier = pathToFileURL(createRequire(url).resolve('fastify')).href
  } catch {}
  const mod = await import(specifier) as { default: FastifyFactory }
  return mod.default
}
