import { Counter, Histogram, type Registry } from 'prom-client'

/** One (method, route, status_code) series: plain numbers, updated per request. */
export interface RouteSeries {
  method: string
  route: string
  status: string
  /** `status` as the number `reply.statusCode` gives: compared per request without a conversion. */
  statusCode: number
  /** Non-cumulative count per bucket; the last slot counts observations above the largest bound. */
  buckets: Float64Array
  sum: number
  count: number
}

/**
 * Per route pattern: the series its last request went to (almost always the next one's too), and
 * whether the route is excluded (the metrics endpoint, `excludeRoutes`): one lookup answers both.
 */
export interface RouteSlot {
  last: RouteSeries | undefined
  readonly excluded: boolean
}

/**
 * Per-route request statistics kept in plain JS structures and copied into prom-client metrics only
 * when the registry is read (`collect()`). The per-request path is one Map lookup by the route
 * pattern (a string Fastify keeps, whose hash V8 caches), two comparisons with the series that
 * route's previous request went to, a short bucket scan and three additions: no label validation,
 * no label hashing, no string building, no allocation. Only a request whose (method, status) differs
 * from its route's previous one builds the `method status route` key and looks it up.
 */
export class RouteStats {
  readonly bounds: Float64Array
  /** Every series, in the order first seen (the order prom-client renders them in). */
  readonly series = new Map<string, RouteSeries>()
  private readonly routes = new Map<string, RouteSlot>()

  constructor (buckets: readonly number[]) {
    this.bounds = Float64Array.from(buckets)
  }

  /** Requests of `route` are not counted. */
  exclude (route: string): void {
    this.routes.set(route, { last: undefined, excluded: true })
  }

  /**
   * A slot of its own, never excluded, for requests that matched no route (recorded under the
   * not-found label with {@link observeSlot}): an `excludeRoutes` entry equal to that label does not
   * drop them, as before this slot existed.
   */
  slot (): RouteSlot {
    return { last: undefined, excluded: false }
  }

  /** Record one finished request of `route` (a pattern), of `seconds`, unless the route is excluded. */
  observe (method: string, route: string, status: number, seconds: number): void {
    let slot = this.routes.get(route)
    if (slot === undefined) {
      slot = { last: undefined, excluded: false }
      this.routes.set(route, slot)
    } else if (slot.excluded) return
    this.observeSlot(slot, method, route, status, seconds)
  }

  /** Record one finished request through `slot` (whose series are labelled `route`). */
  observeSlot (slot: RouteSlot, method: string, route: string, status: number, seconds: number): void {
    let s = slot.last
    if (s === undefined || s.statusCode !== status || s.method !== method) {
      s = this.find(method, route, status)
      slot.last = s
    }
    const bounds = this.bounds
    const n = bounds.length
    let i = 0
    while (i < n && seconds > (bounds[i] as number)) i++
    s.buckets[i] = (s.buckets[i] as number) + 1
    s.sum += seconds
    s.count++
  }

  private find (method: string, route: string, status: number): RouteSeries {
    const key = method + ' ' + status + ' ' + route
    let s = this.series.get(key)
    if (s === undefined) {
      s = { method, route, status: String(status), statusCode: status, buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }
      this.series.set(key, s)
    }
    return s
  }
}

/** The internal per-label-set record prom-client's Histogram exports (`hashMap` values). */
interface HistogramEntry {
  labels: Record<string, string>
  bucketValues: Record<number, number>
  sum: number
  count: number
}
interface HistogramInternals { hashMap: Record<string, HistogramEntry>, upperBounds: number[] }

export interface RouteMetricNames {
  histogram: string
  counter: string
}

/**
 * Create the prom-client Histogram and Counter whose `collect()` copies `stats` in at scrape time.
 *
 * prom-client has no public "set bucket counts" call, so the histogram's label-set map is rebuilt in
 * `collect()` with the same record shape `observe()` creates; `test/route-stats.test.ts` pins that the
 * exposition output is identical to a Histogram fed with `observe()` for the same durations, so a
 * prom-client upgrade that changes the shape fails the tests instead of exporting wrong numbers.
 */
export function registerRouteMetrics (registry: Registry, stats: RouteStats, names: RouteMetricNames): { histogram: Histogram<string>, counter: Counter<string> } {
  const labelNames = ['method', 'route', 'status_code']
  const upper = Array.from(stats.bounds)
  const histogram = new Histogram({
    name: names.histogram,
    help: 'HTTP request duration in seconds, by route pattern (copied from per-route counts at scrape time)',
    labelNames,
    buckets: upper,
    registers: [registry],
    collect () {
      const h = this as unknown as HistogramInternals
      const map: Record<string, HistogramEntry> = {}
      for (const [key, s] of stats.series) {
        const bucketValues: Record<number, number> = {}
        for (let i = 0; i < upper.length; i++) bucketValues[upper[i] as number] = s.buckets[i] as number
        map[key] = { labels: { method: s.method, route: s.route, status_code: s.status }, bucketValues, sum: s.sum, count: s.count }
      }
      h.hashMap = map
    }
  })
  const counter = new Counter({
    name: names.counter,
    help: 'HTTP requests answered, by route pattern (copied from per-route counts at scrape time)',
    labelNames,
    registers: [registry],
    collect () {
      this.reset()
      for (const s of stats.series.values()) {
        this.inc({ method: s.method, route: s.route, status_code: s.status }, s.count)
      }
    }
  })
  return { histogram, counter }
}
