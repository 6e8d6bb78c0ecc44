import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Counter, Histogram, Registry } from 'prom-client'
import { RouteStats, registerRouteMetrics } from '../src/route-stats.js'
import { DEFAULT_BUCKETS } from '../src/options.js'

// Pins the one place that writes prom-client internals: the cheap path must export exactly what a
// Histogram/Counter fed per request with observe()/inc() exports, bucket edges included.
test('scrape-time copy exports the same text as prom-client observe()/inc() for the same requests', async () => {
  const cheap = new Registry()
  const stats = new RouteStats(DEFAULT_BUCKETS)
  registerRouteMetrics(cheap, stats, { histogram: 'h_seconds', counter: 'c_total' })

  const ref = new Registry()
  const h = new Histogram({ name: 'h_seconds', help: 'HTTP request duration in seconds, by route pattern (copied from per-route counts at scrape time)', labelNames: ['method', 'route', 'status_code'], buckets: DEFAULT_BUCKETS, registers: [ref] })
  const c = new Counter({ name: 'c_total', help: 'HTTP requests answered, by route pattern (copied from per-route counts at scrape time)', labelNames: ['method', 'route', 'status_code'], registers: [ref] })

  // Edges (exactly on a bound goes in that bucket), zero, above the largest bound, several series.
  const durations = [0, 0.005, 0.0050001, 0.01, 0.3, 1, 2.5, 9.99, 10, 10.5, 42, 0.024, 0.026]
  const series: Array<[string, string, number]> = [['GET', '/a/:id', 200], ['POST', '/a', 201], ['GET', '__not_found__', 404]]
  let i = 0
  for (const d of durations) {
    for (const [method, route, status] of series) {
      const dur = d + i * 1e-9
      i++
      stats.observe(method, route, status, dur)
      h.observe({ method, route, status_code: String(status) }, dur)
      c.inc({ method, route, status_code: String(status) })
    }
  }
  cheap.setDefaultLabels({ pid: '1', worker: '0' })
  ref.setDefaultLabels({ pid: '1', worker: '0' })
  assert.equal(await cheap.metrics(), await ref.metrics())
  // Scraping twice does not double anything.
  assert.equal(await cheap.metrics(), await ref.metrics())
  assert.deepEqual(await cheap.getMetricsAsJSON(), await ref.getMetricsAsJSON())
})

test('series are keyed by method, status and route only', () => {
  const stats = new RouteStats([0.1])
  stats.observe('GET', '/x', 200, 0.05)
  stats.observe('GET', '/x', 200, 0.5)
  stats.observe('GET', '/x', 500, 0.05)
  assert.equal(stats.series.size, 2)
  const s = stats.series.get('GET 200 /x')
  assert.deepEqual(Array.from(s?.buckets ?? []), [1, 1])
  assert.equal(s?.count, 2)
})

// The fast path (a per-route "last series" cache, a key built only on a change of method or status)
// against plain prom-client, over random sequences: any method, route (label values that need
// escaping included), status and duration (bucket edges included), in any interleaving.
test('property: the fast path renders byte-identical text to prom-client observe()/inc() for any sequence', async () => {
  const help = { h: 'HTTP request duration in seconds, by route pattern (copied from per-route counts at scrape time)', c: 'HTTP requests answered, by route pattern (copied from per-route counts at scrape time)' }
  const obs = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'),
    route: fc.oneof(fc.constantFrom('/', '/users/:id', '/users', '__not_found__', '/q"uote', '/back\\slash', '/new\nline'), fc.string({ minLength: 1, maxLength: 8 })),
    status: fc.constantFrom(200, 201, 204, 301, 304, 400, 404, 500, 503),
    seconds: fc.oneof(fc.constantFrom(...DEFAULT_BUCKETS, 0, 1e-9, 10.000001), fc.double({ min: 0, max: 30, noNaN: true }))
  })
  await fc.assert(fc.asyncProperty(fc.array(obs, { maxLength: 60 }), fc.boolean(), async (list, scrapeMidway) => {
    const cheap = new Registry()
    const stats = new RouteStats(DEFAULT_BUCKETS)
    registerRouteMetrics(cheap, stats, { histogram: 'h_seconds', counter: 'c_total' })
    const ref = new Registry()
    const labelNames = ['method', 'route', 'status_code']
    const h = new Histogram({ name: 'h_seconds', help: help.h, labelNames, buckets: DEFAULT_BUCKETS, registers: [ref] })
    const c = new Counter({ name: 'c_total', help: help.c, labelNames, registers: [ref] })
    cheap.setDefaultLabels({ pid: '1', worker: '0' })
    ref.setDefaultLabels({ pid: '1', worker: '0' })
    for (const [i, o] of list.entries()) {
      stats.observe(o.method, o.route, o.status, o.seconds)
      h.observe({ method: o.method, route: o.route, status_code: String(o.status) }, o.seconds)
      c.inc({ method: o.method, route: o.route, status_code: String(o.status) })
      if (scrapeMidway && i === list.length >> 1) assert.equal(await cheap.metrics(), await ref.metrics())
    }
    assert.equal(await cheap.metrics(), await ref.metrics())
  }), { numRuns: 300 })
})

test('excluded routes are not counted; a separate slot (the not-found one) is never excluded', () => {
  const stats = new RouteStats([0.1])
  stats.exclude('/metrics')
  stats.exclude('__not_found__')
  stats.observe('GET', '/metrics', 200, 0.01)
  stats.observe('GET', '/x', 200, 0.01)
  const notFound = stats.slot()
  stats.observeSlot(notFound, 'GET', '__not_found__', 404, 0.01)
  stats.observeSlot(notFound, 'GET', '__not_found__', 404, 0.2)
  assert.deepEqual([...stats.series.keys()], ['GET 200 /x', 'GET 404 __not_found__'])
  assert.equal(stats.series.get('GET 404 __not_found__')?.count, 2)
})
