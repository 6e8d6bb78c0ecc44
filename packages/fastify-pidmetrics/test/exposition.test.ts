// The primary writes the exposition itself (src/exposition.ts): these tests pin it to prom-client's
// `Registry.metrics()` byte for byte, on real prom-client metrics and on families as they reach the
// primary over IPC.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client'
import { ClusterMerger, formatFamilies, type Family, type ScrapeResult } from '../src/index.js'
import { PROMETHEUS_CONTENT_TYPE } from '../src/exposition.js'
import { FakePrimary, FakeWorker } from './fake-cluster.js'

/** What the primary did before: each family registered as a read-only metric of a throwaway prom-client Registry. */
async function promClientFormat (families: Family[]): Promise<string> {
  const registry = new Registry()
  for (const f of families) {
    if (f.values.length === 0) continue
    const metric = { name: f.name, help: f.help, type: f.type, aggregator: f.aggregator, get: async () => f, reset: () => {} }
    registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0])
  }
  return await registry.metrics()
}

const AWKWARD = 'back\\slash "quoted"\nnew line \\n literal'

test('same text as prom-client Registry.metrics() for counters, gauges, histograms and summaries with escaping, NaN and ±Inf', async () => {
  const registry = new Registry()
  const counter = new Counter({ name: 'jobs_total', help: 'Jobs done\\with a backslash\nand a newline', labelNames: ['queue', 'note'], registers: [registry] })
  counter.inc({ queue: 'mail', note: AWKWARD }, 3)
  counter.inc({ queue: 'sms', note: '' }, 0.5)
  new Counter({ name: 'plain_total', help: 'unlabelled', registers: [registry] }).inc(1e21)
  const gauge = new Gauge({ name: 'odd_values', help: 'NaN and infinities', labelNames: ['kind'], registers: [registry] })
  gauge.set({ kind: 'nan' }, NaN)
  gauge.set({ kind: 'inf' }, Infinity)
  gauge.set({ kind: 'neg-inf' }, -Infinity)
  gauge.set({ kind: 'tiny' }, 1e-7)
  gauge.set({ kind: 'negative' }, -0.25)
  const histogram = new Histogram({ name: 'latency_seconds', help: 'a histogram', labelNames: ['route'], buckets: [0.1, 1, 10], registers: [registry] })
  histogram.observe({ route: '/a"b' }, 0.05)
  histogram.observe({ route: '/a"b' }, 3)
  histogram.observe({ route: 'c\\d' }, 100)
  new Histogram({ name: 'unlabelled_seconds', help: 'no labels', buckets: [1], registers: [registry] }).observe(0.5)
  const summary = new Summary({ name: 'size_bytes', help: 'a summary', labelNames: ['kind'], percentiles: [0.5, 0.99], registers: [registry] })
  for (const n of [1, 2, 3, 400]) summary.observe({ kind: 'k\nv' }, n)
  registry.registerMetric(new Summary({ name: 'empty_summary', help: 'observed nothing', percentiles: [0.5], registers: [] }))

  const expected = await registry.metrics()
  const families = await registry.getMetricsAsJSON() as unknown as Family[]
  assert.equal(formatFamilies(families), expected)
  // The cases are really in there.
  assert.match(expected, /note="back\\\\slash \\"quoted\\"\\nnew line \\\\n literal"/)
  assert.match(expected, /^# HELP jobs_total Jobs done\\\\with a backslash\\nand a newline$/m)
  assert.match(expected, /^odd_values\{kind="nan"\} Nan$/m)
  assert.match(expected, /^odd_values\{kind="neg-inf"\} -Inf$/m)
  assert.match(expected, /^latency_seconds_bucket\{le="\+Inf",route="\/a\\"b"\} 2$/m)
  assert.match(expected, /^size_bytes\{quantile="0.99",kind="k\\nv"\} /m)
})

test('same text as prom-client for families as they reach the primary (numeric labels, NaN, empty families) and a merged cluster scrape', async (t) => {
  const ipc: Family[] = [
    { name: 'a_total', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value: 1, labels: { pid: 12, worker: '0', odd: AWKWARD } }] },
    { name: 'empty', help: 'no samples', type: 'gauge', aggregator: 'sum', values: [] },
    { name: 'g', help: '', type: 'gauge', aggregator: 'sum', values: [{ value: NaN, labels: {} }, { value: Infinity, labels: { a: 'b' } }, { value: 0, labels: { a: 'c' } }] },
    { name: 'h', help: 'hist', type: 'histogram', aggregator: 'sum', values: [{ value: 2, labels: { le: 0.5, pid: '1' }, metricName: 'h_bucket' }, { value: 3, labels: { le: '+Inf', pid: '1' }, metricName: 'h_bucket' }, { value: 1.75, labels: { pid: '1' }, metricName: 'h_sum' }, { value: 3, labels: { pid: '1' }, metricName: 'h_count' }] }
  ]
  assert.equal(formatFamilies(ipc), await promClientFormat(ipc))
  assert.doesNotMatch(formatFamilies(ipc), /empty/, 'a family without samples is left out, HELP and TYPE too')
  assert.equal(formatFamilies([]), await promClientFormat([]))

  const primary = new FakePrimary([await FakeWorker.start(0, 100), await FakeWorker.start(1, 101)])
  t.after(() => primary.close())
  await primary.fleet[0]?.hit(5)
  await primary.fleet[1]?.hit(2, '/items/7')
  const merged = new ClusterMerger(() => [0, 1]).merge(await primary.requestAll('pidmetrics:scrape') as ScrapeResult[])
  assert.equal(formatFamilies(merged.families), await promClientFormat(merged.families))
  assert.equal(PROMETHEUS_CONTENT_TYPE, Registry.PROMETHEUS_CONTENT_TYPE)
})

for (const dialect of ['esm', 'cjs'] as const) {
  test(`the primary half loads no prom-client, no node:v8 and no perf_hooks, scrape included (${dialect})`, () => {
    const packageDir = fileURLToPath(new URL('..', import.meta.url))
    // Runs the built dist (pnpm -r build), resolved by the package's own name from its directory:
    // dist/ through import, dist/cjs/ through require (a CommonJS primary must stay as lean).
    const head = dialect === 'esm'
      ? `import { EventEmitter } from 'node:events'
    import { createRequire } from 'node:module'
    const require = createRequire(import.meta.url)
    const { clusterMetrics } = await import('@nclust/fastify-pidmetrics/cluster')`
      : `const { EventEmitter } = require('node:events')
    const { clusterMetrics } = require('@nclust/fastify-pidmetrics/cluster')`
    const script = `
    ${head}
    // Not an ESM import of node:http: on Node 22+ that loads undici, and undici loads perf_hooks.
    const { get } = require('node:http')
    const scrape = { v: 1, pid: 4242, worker: '0', metrics: [
      { name: 'http_requests_total', help: 'requests', type: 'counter', aggregator: 'sum', values: [{ value: 7, labels: { method: 'GET', route: '/', status_code: 200, pid: '4242', worker: '0' } }] }
    ] }
    const handle = {
      role: 'primary', size: 1, events: new EventEmitter(),
      workers: () => [{ workerId: 0, pid: 4242, state: 'ready', generation: 0, startedAt: 0, restarts: 0 }],
      requestAll: async () => [{ workerId: 0, pid: 4242, ok: true, value: scrape, ms: 1 }],
      onClose () {}
    }
    const server = await clusterMetrics(handle, { port: 0, host: '127.0.0.1' })
    // node:http, not fetch: undici loads perf_hooks itself.
    const body = await new Promise((resolve, reject) => get(server.url, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk) => { text += chunk }).on('end', () => resolve(text))
    }).on('error', reject))
    await server.close()
    const cjs = Object.keys(require('node:module')._cache)
    process.stdout.write(JSON.stringify({ body, cjs, builtins: process.moduleLoadList }))
  `
    const wrapped = dialect === 'esm' ? script : `(async () => {${script}})()`
    const out = JSON.parse(execFileSync(process.execPath, [`--input-type=${dialect === 'esm' ? 'module' : 'commonjs'}`, '-e', wrapped], { cwd: packageDir, encoding: 'utf8', timeout: 30_000 })) as { body: string, cjs: string[], builtins: string[] }
    assert.match(out.body, /^http_requests_total\{method="GET",route="\/",status_code="200",pid="4242",worker="0"\} 7$/m)
    assert.match(out.body, /^process_resident_memory_bytes\{pid="\d+",worker="primary"\} \d+$/m, 'the primary\'s own metrics are in the scrape')
    assert.match(out.body, /^nclust_scrape_worker_up\{worker="0"\} 1$/m)
    assert.ok(out.cjs.length > 0, 'the CommonJS cache is read (the scrape loads @fastify/error through it)')
    assert.deepEqual(out.cjs.filter((p) => p.includes('prom-client')), [])
    assert.deepEqual(out.builtins.filter((m) => m === 'NativeModule perf_hooks' || m === 'NativeModule v8'), [])
    if (dialect === 'cjs') assert.ok(out.cjs.some((p) => p.includes('/dist/cjs/cluster-metrics.js')), 'the CommonJS build was the one loaded')
  })
}
