import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ClusterMerger, formatFamilies, isCumulative, type ScrapeResult } from '../src/index.js'
import { FakePrimary, FakeWorker } from './fake-cluster.js'
import { familyTypes, samples, sumOf, type Sample } from './helpers.js'

function noDuplicateSeries (text: string): void {
  const seen = new Set<string>()
  for (const [name, list] of samples(text)) {
    for (const s of list) {
      const key = name + JSON.stringify(Object.entries(s.labels).sort())
      assert.ok(!seen.has(key), `duplicate series ${key}`)
      seen.add(key)
    }
  }
}

async function round (merger: ClusterMerger, primary: FakePrimary, timeout = 1000): Promise<{ text: string, s: Map<string, Sample[]>, merged: ReturnType<ClusterMerger['merge']> }> {
  const results = await primary.requestAll('pidmetrics:scrape', undefined, { timeout }) as ScrapeResult[]
  const merged = merger.merge(results)
  const text = formatFamilies(merged.families)
  noDuplicateSeries(text)
  return { text, s: samples(text), merged }
}

const byWorker = (list: Sample[] | undefined, worker: string): Sample[] => (list ?? []).filter((x) => x.labels.worker === worker)

test('two workers: series kept apart by pid/worker, totals add up, quantiles never summed', async (t) => {
  const w0 = await FakeWorker.start(0, 1000)
  const w1 = await FakeWorker.start(1, 1001)
  const primary = new FakePrimary([w0, w1])
  t.after(() => primary.close())
  await w0.hit(30)
  await w1.hit(69)
  await w1.hit(1, '/items/1')
  await w0.hit(1, '/items/1')
  const merger = new ClusterMerger(() => [0, 1])
  const { text, s, merged } = await round(merger, primary)

  assert.deepEqual(merged.slots.map((x) => [x.worker, x.pid, x.up]), [[0, 1000, true], [1, 1001, true]])
  const total = s.get('http_requests_total')
  assert.equal(sumOf(total), 101)
  assert.equal(sumOf(total, (l) => l.pid === '1000' && l.worker === '0'), 31)
  assert.equal(sumOf(total, (l) => l.pid === '1001' && l.worker === '1'), 70)
  assert.equal(merged.requestTotals.get(0), 31)
  assert.equal(familyTypes(text).get('http_request_duration_seconds'), 'HISTOGRAM')
  // Each worker's own process metrics, each under its own pid.
  assert.deepEqual(byWorker(s.get('process_cpu_user_seconds_total'), '0').map((x) => x.labels.pid), ['1000'])
  assert.deepEqual(byWorker(s.get('process_cpu_user_seconds_total'), '1').map((x) => x.labels.pid), ['1001'])
  // Summary quantiles pass through per worker: worker 0 observed 1, worker 1 observed 2; never 3.
  const q = (s.get('job_seconds') ?? []).filter((x) => x.labels.quantile === '0.5')
  assert.deepEqual(q.map((x) => [x.labels.worker, x.value]).sort(), [['0', 1], ['1', 2]])
})

test('a dead worker: reported down, its counters stay at their last value, its gauges go', async (t) => {
  const w0 = await FakeWorker.start(0, 2000)
  const w1 = await FakeWorker.start(1, 2001)
  const primary = new FakePrimary([w0, w1])
  t.after(() => primary.close())
  const merger = new ClusterMerger(() => [0, 1])
  await w0.hit(40)
  await w1.hit(60)
  const before = await round(merger, primary)
  assert.equal(sumOf(before.s.get('http_requests_total')), 100)

  w1.alive = false // kill -9: the supervisor no longer lists it
  const after = await round(merger, primary)
  const slot1 = after.merged.slots.find((x) => x.worker === 1)
  assert.equal(slot1?.up, false)
  assert.match(slot1?.error ?? '', /not asked/)
  assert.equal(sumOf(after.s.get('http_requests_total')), 100, 'the cluster total did not go down')
  assert.equal(sumOf(after.s.get('http_requests_total'), (l) => l.pid === '2001'), 60, 'frozen under the dead pid')
  assert.equal(sumOf(after.s.get('http_request_duration_seconds_count'), (l) => l.worker === '1'), 60)
  assert.equal(byWorker(after.s.get('nodejs_heap_size_used_bytes'), '1').length, 0, 'no stale gauges')
  assert.equal(byWorker(after.s.get('nodejs_heap_size_used_bytes'), '0').length, 1)
})

test('a replaced worker: the old final values are carried into the new pid, no counter goes backwards', async (t) => {
  const w0 = await FakeWorker.start(0, 3000)
  const w1 = await FakeWorker.start(1, 3001)
  const primary = new FakePrimary([w0, w1])
  t.after(() => primary.close())
  const merger = new ClusterMerger(() => [0, 1])
  await w0.hit(10)
  await w1.hit(20)
  await w1.hit(3, '/items/7')
  await round(merger, primary)

  await w1.replace(3002)
  await w1.hit(5)
  const { s, merged } = await round(merger, primary)
  assert.equal(merged.slots.find((x) => x.worker === 1)?.pid, 3002)
  const total = s.get('http_requests_total')
  assert.equal(sumOf(total, (l) => l.pid === '3001'), 0, 'old pid gone from the output')
  assert.equal(sumOf(total, (l) => l.pid === '3002' && l.route === '/hello'), 25, '20 carried + 5 new')
  assert.equal(sumOf(total, (l) => l.pid === '3002' && l.route === '/items/:id'), 3, 'a route only the old process served continues under the new pid')
  assert.equal(sumOf(total), 38)
  // Histogram stays consistent: +Inf bucket == count, buckets cumulative.
  const buckets = (s.get('http_request_duration_seconds_bucket') ?? []).filter((x) => x.labels.worker === '1' && x.labels.route === '/hello')
  const inf = buckets.find((x) => x.labels.le === '+Inf')?.value
  assert.equal(inf, 25)
  assert.equal(sumOf(s.get('http_request_duration_seconds_count'), (l) => l.worker === '1' && l.route === '/hello'), 25)
  for (let i = 1; i < buckets.length; i++) assert.ok((buckets[i]?.value ?? 0) >= (buckets[i - 1]?.value ?? 0), 'cumulative buckets')
  // CPU seconds of the slot keep growing too (carried).
  const cpu = sumOf(s.get('process_cpu_user_seconds_total'), (l) => l.worker === '1')
  assert.ok(cpu > 0)

  // A late answer from the replaced pid is ignored, never double counted.
  const stale = await w0.scrape()
  for (const f of stale.metrics) for (const v of f.values) v.labels = { ...v.labels, worker: '1', pid: '3001' }
  const again = merger.merge([{ workerId: 1, pid: 3001, ok: true, value: { ...stale, pid: 3001 }, ms: 1 }])
  const text = formatFamilies(again.families)
  assert.equal(sumOf(samples(text).get('http_requests_total'), (l) => l.worker === '1'), 28)
  assert.equal(again.slots.find((x) => x.worker === 1)?.up, false)
})

test('a counter that drops inside one pid (registry reset) is carried too', async (t) => {
  const w0 = await FakeWorker.start(0, 4000)
  const primary = new FakePrimary([w0])
  t.after(() => primary.close())
  const merger = new ClusterMerger(() => [0])
  await w0.hit(9)
  await round(merger, primary)
  w0.app.pidMetrics.registry.resetMetrics()
  // The route counter is rebuilt from the plugin's own store, so reset it through a custom counter instead:
  const { Counter } = await import('prom-client')
  const c = new Counter({ name: 'jobs_total', help: 'jobs', registers: [w0.app.pidMetrics.registry] })
  c.inc(7)
  await round(merger, primary)
  c.reset()
  c.inc(2)
  const { s } = await round(merger, primary)
  assert.equal(sumOf(s.get('jobs_total')), 9, '7 before the reset + 2 after')
})

test('isCumulative: counters, histograms and summary sum/count only', () => {
  assert.equal(isCumulative('counter', 'a_total', undefined), true)
  assert.equal(isCumulative('histogram', 'h', 'h_bucket'), true)
  assert.equal(isCumulative('summary', 's', 's_count'), true)
  assert.equal(isCumulative('summary', 's', undefined), false)
  assert.equal(isCumulative('gauge', 'g', undefined), false)
})
