import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import fp from 'fastify-plugin'
import fastifyMetricsModule, { type IMetricsPluginOptions } from 'fastify-metrics'
import * as promClient from 'prom-client'
import { currentWorker, onPrimaryRequest } from '@nclust/fastify-cluster'
import { PidMetricsDuplicateError } from './errors.js'
import { resolvePidMetricsOptions, type PidMetricsOptions } from './options.js'
import type { Family } from './merge.js'
import { RouteStats, registerRouteMetrics } from './route-stats.js'

/** Names of the route metrics (the same names fastify-metrics uses). */
export const ROUTE_HISTOGRAM = 'http_request_duration_seconds'
export const ROUTE_COUNTER = 'http_requests_total'

/** What a worker answers on the scrape channel. */
export interface WorkerScrape {
  v: 1
  pid: number
  worker: string
  /** `registry.getMetricsAsJSON()`, default labels (`pid`, `worker`, extra `labels`) included. */
  metrics: Family[]
}

/** Decorated on the instance as `fastify.pidMetrics`. */
export interface PidMetricsDecorator {
  /** The registry served on the endpoint and sent to the primary. */
  registry: promClient.Registry
  /** The constant labels every series carries (`pid`, `worker`, plus `labels`). */
  labels: Readonly<Record<string, string>>
  /** What the primary gets over IPC (also handy in tests). */
  scrape(): Promise<WorkerScrape>
}

declare module 'fastify' {
  interface FastifyInstance {
    pidMetrics: PidMetricsDecorator
  }
}

// fastify-metrics is CommonJS with `exports.default`.
type MetricsPlugin = FastifyPluginCallback<Partial<IMetricsPluginOptions>>
const fastifyMetrics: MetricsPlugin = (fastifyMetricsModule as unknown as { default?: MetricsPlugin }).default ?? (fastifyMetricsModule as unknown as MetricsPlugin)

async function pidMetricsPlugin (fastify: FastifyInstance, rawOptions: PidMetricsOptions): Promise<void> {
  const opts = resolvePidMetricsOptions(rawOptions)
  const registry = opts.registry ?? promClient.register
  const ctx = currentWorker()
  const worker = ctx !== undefined ? String(ctx.workerId) : (opts.worker ?? process.env.NCLUST_WORKER ?? '0')
  const labels: Record<string, string> = { ...opts.labels, pid: String(process.pid), worker }

  const ours = [
    ...(opts.routeMetrics ? [ROUTE_HISTOGRAM, ROUTE_COUNTER] : []),
    ...(opts.defaultMetrics === false ? [] : [(opts.defaultMetrics.prefix ?? '') + 'process_cpu_user_seconds_total'])
  ]
  for (const name of ours) {
    if (registry.getSingleMetric(name) !== undefined) throw new PidMetricsDuplicateError(name)
  }

  // pid/worker go on every series of the registry at output time: zero cost per request.
  registry.setDefaultLabels(labels)

  // fastify-metrics does the endpoint, the registry wiring and the process/Node metrics. Its own route
  // metrics (a histogram plus a summary, updated per request with label validation and hashing) are
  // turned off: the route part below is the cheap one. Handing it a client whose `register` is our
  // registry makes it serve that registry alone (its multi-registry merge would drop default labels).
  const client = { ...promClient, register: registry } as unknown as typeof promClient
  await fastify.register(fastifyMetrics, {
    promClient: client,
    endpoint: opts.endpoint === false ? null : opts.endpoint,
    defaultMetrics: opts.defaultMetrics === false
      ? { enabled: false }
      : { ...opts.defaultMetrics, enabled: true, register: registry },
    routeMetrics: { enabled: false }
  })

  if (opts.routeMetrics) {
    const stats = new RouteStats(opts.buckets)
    registerRouteMetrics(registry, stats, { histogram: ROUTE_HISTOGRAM, counter: ROUTE_COUNTER })
    const notFound = opts.notFoundRoute
    const notFoundSlot = stats.slot()
    for (const route of opts.excludeRoutes) stats.exclude(route)
    // One onResponse hook, no onRequest: Fastify already times every response that has an onResponse
    // hook (reply.elapsedTime reads the start and end it records), so there is no timer of our own.
    fastify.addHook('onResponse', function pidMetricsOnResponse (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) {
      // The route pattern (`/users/:id`), never the raw URL; undefined for the not-found handler.
      const url = request.routeOptions.url
      if (url === undefined) {
        stats.observeSlot(notFoundSlot, request.method, notFound, reply.statusCode, reply.elapsedTime / 1000)
      } else {
        stats.observe(request.method, url, reply.statusCode, reply.elapsedTime / 1000)
      }
      done()
    })
  }

  const scrape = async (): Promise<WorkerScrape> => ({
    v: 1,
    pid: process.pid,
    worker,
    metrics: await registry.getMetricsAsJSON() as unknown as Family[]
  })
  fastify.decorate('pidMetrics', { registry, labels, scrape })

  if (ctx !== undefined && !ctx.single) {
    const off = onPrimaryRequest(opts.channel, scrape)
    fastify.addHook('onClose', (_instance, done) => { off(); done() })
  }
}

/**
 * Prometheus metrics for one Fastify worker, every series labelled with `pid` and `worker`.
 * Register it in `buildApp`; in the primary call `clusterMetrics(handle)`.
 */
export const pidMetrics = fp(pidMetricsPlugin, {
  name: '@nclust/fastify-pidmetrics',
  fastify: '5.x'
})
