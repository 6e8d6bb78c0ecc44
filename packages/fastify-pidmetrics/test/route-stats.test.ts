import { test } from 'node:test'
import assert from 'node:assert/strict'
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
