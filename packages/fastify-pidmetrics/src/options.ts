import type { Registry } from 'prom-client'
import { bad, unknownOption } from './errors.js'

/** Options of the default process/Node metrics, passed to prom-client's `collectDefaultMetrics` (through fastify-metrics). */
export interface DefaultMetricsOptions {
  prefix?: string
  gcDurationBuckets?: number[]
  eventLoopMonitoringPrecision?: number
}

/** Options of the `pidMetrics` worker plugin. Every one is optional. */
export interface PidMetricsOptions {
  /** Path of this worker's own scrape endpoint on the app port; `false` serves none (the primary still gets the metrics over IPC). Default `'/metrics'`. */
  endpoint?: string | false
  /** prom-client registry the metrics go to and are served from. Default: prom-client's global `register`, so metrics you create the usual way get the `pid`/`worker` labels and reach the cluster scrape too. */
  registry?: Registry
  /** Process and Node.js metrics (prom-client `collectDefaultMetrics`); `false` turns them off, an object passes options. Default `true`. */
  defaultMetrics?: boolean | DefaultMetricsOptions
  /** The `http_request_duration_seconds` histogram and `http_requests_total` counter. Default `true`. */
  routeMetrics?: boolean
  /** Histogram bucket upper bounds in seconds. Default prom-client's `[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]`. */
  buckets?: number[]
  /** `route` label of requests that matched no route (404s from the not-found handler). Default `'__not_found__'`. */
  notFoundRoute?: string
  /** Route patterns that are not counted, besides the metrics endpoint (never counted). Default `[]`. */
  excludeRoutes?: string[]
  /** `worker` label outside `startClustered` (a plain app). Default `process.env.NCLUST_WORKER ?? '0'`; inside a cluster the slot id always wins. */
  worker?: string
  /** Extra constant labels on every series (e.g. `{ app: 'api' }`). `pid` and `worker` are reserved. Default `{}`. */
  labels?: Record<string, string>
  /** IPC channel the primary asks on. Default `'pidmetrics:scrape'`; change it on both sides or neither. */
  channel?: string
}

export interface ResolvedPidMetricsOptions {
  endpoint: string | false
  registry: Registry | undefined
  defaultMetrics: false | DefaultMetricsOptions
  routeMetrics: boolean
  buckets: number[]
  notFoundRoute: string
  excludeRoutes: string[]
  worker: string | undefined
  labels: Record<string, string>
  channel: string
}

export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
export const DEFAULT_CHANNEL = 'pidmetrics:scrape'
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const KNOWN = new Set(['endpoint', 'registry', 'defaultMetrics', 'routeMetrics', 'buckets', 'notFoundRoute', 'excludeRoutes', 'worker', 'labels', 'channel'])

export function isRegistryLike (value: unknown): value is Registry {
  return typeof value === 'object' && value !== null &&
    typeof (value as Registry).registerMetric === 'function' &&
    typeof (value as Registry).getMetricsAsJSON === 'function' &&
    typeof (value as Registry).setDefaultLabels === 'function'
}

export function checkBuckets (name: string, value: unknown): number[] {
  if (!Array.isArray(value) || value.length === 0 ||
    !value.every((v, i) => typeof v === 'number' && Number.isFinite(v) && (i === 0 || v > (value[i - 1] as number)))) {
    bad(name, value, 'a non-empty array of increasing finite numbers (seconds)')
  }
  return [...value as number[]]
}

export function resolvePidMetricsOptions (raw: unknown): ResolvedPidMetricsOptions {
  if (raw === undefined || raw === null) raw = {}
  if (typeof raw !== 'object' || Array.isArray(raw)) bad('options', raw, 'an object')
  const o = raw as Record<string, unknown>
  for (const key of Object.keys(o)) {
    // Fastify passes its own per-plugin keys (prefix, logLevel...) through plugin options.
    if (!KNOWN.has(key) && !['prefix', 'logLevel', 'logSerializers'].includes(key)) {
      unknownOption(key, KNOWN)
    }
  }

  let endpoint: string | false = '/metrics'
  if (o.endpoint !== undefined) {
    if (o.endpoint === false) endpoint = false
    else if (typeof o.endpoint === 'string' && o.endpoint.startsWith('/')) endpoint = o.endpoint
    else bad('endpoint', o.endpoint, 'a path starting with "/" or false')
  }

  let registry: Registry | undefined
  if (o.registry !== undefined) {
    if (!isRegistryLike(o.registry)) bad('registry', o.registry, 'a prom-client Registry (new Registry())')
    registry = o.registry
  }

  let defaultMetrics: false | DefaultMetricsOptions = {}
  if (o.defaultMetrics !== undefined && o.defaultMetrics !== true) {
    if (o.defaultMetrics === false) defaultMetrics = false
    else if (typeof o.defaultMetrics === 'object' && o.defaultMetrics !== null && !Array.isArray(o.defaultMetrics)) {
      const d = o.defaultMetrics as Record<string, unknown>
      for (const key of Object.keys(d)) {
        if (!['prefix', 'gcDurationBuckets', 'eventLoopMonitoringPrecision'].includes(key)) {
          unknownOption(`defaultMetrics.${key}`, ['prefix', 'gcDurationBuckets', 'eventLoopMonitoringPrecision (register and labels are set by pidMetrics)'])
        }
      }
      if (d.prefix !== undefined && (typeof d.prefix !== 'string' || (d.prefix !== '' && !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(d.prefix)))) {
        bad('defaultMetrics.prefix', d.prefix, 'a metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)')
      }
      if (d.gcDurationBuckets !== undefined) checkBuckets('defaultMetrics.gcDurationBuckets', d.gcDurationBuckets)
      if (d.eventLoopMonitoringPrecision !== undefined &&
        (typeof d.eventLoopMonitoringPrecision !== 'number' || !Number.isInteger(d.eventLoopMonitoringPrecision) || d.eventLoopMonitoringPrecision < 1)) {
        bad('defaultMetrics.eventLoopMonitoringPrecision', d.eventLoopMonitoringPrecision, 'an integer >= 1 (milliseconds)')
      }
      defaultMetrics = { ...d } as DefaultMetricsOptions
    } else bad('defaultMetrics', o.defaultMetrics, 'true, false or an object of collectDefaultMetrics options')
  }

  let routeMetrics = true
  if (o.routeMetrics !== undefined) {
    if (typeof o.routeMetrics !== 'boolean') bad('routeMetrics', o.routeMetrics, 'true or false')
    routeMetrics = o.routeMetrics
  }

  const buckets = o.buckets === undefined ? [...DEFAULT_BUCKETS] : checkBuckets('buckets', o.buckets)

  let notFoundRoute = '__not_found__'
  if (o.notFoundRoute !== undefined) {
    if (typeof o.notFoundRoute !== 'string' || o.notFoundRoute.length === 0) bad('notFoundRoute', o.notFoundRoute, 'a non-empty string')
    notFoundRoute = o.notFoundRoute
  }

  const excludeRoutes: string[] = endpoint === false ? [] : [endpoint]
  if (o.excludeRoutes !== undefined) {
    if (!Array.isArray(o.excludeRoutes) || !o.excludeRoutes.every((r) => typeof r === 'string')) {
      bad('excludeRoutes', o.excludeRoutes, 'an array of route patterns (strings such as "/health")')
    }
    excludeRoutes.push(...o.excludeRoutes as string[])
  }

  let worker: string | undefined
  if (o.worker !== undefined) {
    if (typeof o.worker !== 'string' || o.worker.length === 0) bad('worker', o.worker, 'a non-empty string')
    worker = o.worker
  }

  let labels: Record<string, string> = {}
  if (o.labels !== undefined) {
    if (typeof o.labels !== 'object' || o.labels === null || Array.isArray(o.labels)) bad('labels', o.labels, 'an object of label name to string value')
    for (const [k, v] of Object.entries(o.labels)) {
      if (!LABEL_NAME.test(k) || k.startsWith('__')) bad(`labels.${k}`, v, 'a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)')
      if (['pid', 'worker', 'method', 'route', 'status_code', 'le', 'quantile'].includes(k)) bad(`labels.${k}`, v, 'a label name other than pid, worker, method, route, status_code, le, quantile (set by pidMetrics)')
      if (typeof v !== 'string') bad(`labels.${k}`, v, 'a string')
    }
    labels = { ...o.labels as Record<string, string> }
  }

  let channel = DEFAULT_CHANNEL
  if (o.channel !== undefined) {
    if (typeof o.channel !== 'string' || o.channel.length === 0) bad('channel', o.channel, 'a non-empty string')
    channel = o.channel
  }

  return { endpoint, registry, defaultMetrics, routeMetrics, buckets, notFoundRoute, excludeRoutes, worker, labels, channel }
}
