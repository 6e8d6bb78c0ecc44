import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import fc from 'fast-check'
import { Counter, Histogram, Registry } from 'prom-client'
import { pidMetrics, ROUTE_COUNTER, ROUTE_HISTOGRAM, DEFAULT_BUCKETS, type PidMetricsOptions } from '../src/index.js'
import { familyTypes, promtoolCheckMetrics, LINT_WITH_PROMTOOL, samples, sumOf } from './helpers.js'

async function app (opts: PidMetricsOptions = {}): Promise<FastifyInstance> {
  const f = Fastify()
  await f.register(pidMetrics, { registry: new Registry(), ...opts })
  f.get('/users/:id', async () => ({ ok: true }))
  f.post('/users', async (_req, reply) => reply.code(201).send({ ok: true }))
  f.get('/boom', async () => { throw new Error('boom') })
  f.get('/health', async () => 'ok')
  await f.ready()
  return f
}

test('every series carries pid and worker labels; route labels use the pattern; 404s share one label', async (t) => {
  const f = await app({ worker: '3', labels: { app: 'api' } })
  t.after(() => f.close())
  for (let i = 0; i < 5; i++) await f.inject(`/users/${i}`)
  await f.inject({ method: 'POST', url: '/users' })
  await f.inject('/boom')
  for (let i = 0; i < 4; i++) await f.inject(`/no/such/${i}`)
  await f.inject('/metrics')

  const res = await f.inject('/metrics')
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /text\/plain; version=0\.0\.4/)
  const s = samples(res.body)
  let seen = 0
  for (const [name, list] of s) {
    for (const sample of list) {
      seen++
      assert.equal(sample.labels.pid, String(process.pid), `${name} has pid`)
      assert.equal(sample.labels.worker, '3', `${name} has worker`)
      assert.equal(sample.labels.app, 'api', `${name} has the extra label`)
    }
  }
  assert.ok(seen > 50, 'default metrics are there too')
  assert.ok(s.has('process_cpu_user_seconds_total'))
  assert.ok(s.has('nodejs_eventloop_lag_seconds'))

  const types = familyTypes(res.body)
  assert.equal(types.get('http_requests_total'), 'COUNTER')
  assert.equal(types.get('http_request_duration_seconds'), 'HISTOGRAM')

  const total = s.get('http_requests_total') ?? []
  const routes = new Set(total.map((x) => x.labels.route))
  assert.deepEqual([...routes].sort(), ['/boom', '/users', '/users/:id', '__not_found__'])
  assert.equal(sumOf(total, (l) => l.route === '/users/:id' && l.method === 'GET' && l.status_code === '200'), 5)
  assert.equal(sumOf(total, (l) => l.route === '/users' && l.method === 'POST' && l.status_code === '201'), 1)
  assert.equal(sumOf(total, (l) => l.route === '/boom' && l.status_code === '500'), 1)
  assert.equal(sumOf(total, (l) => l.route === '__not_found__' && l.status_code === '404'), 4)
  assert.equal(sumOf(total), 11, 'the metrics endpoint itself is not counted')

  const count = s.get('http_request_duration_seconds_count') ?? []
  assert.equal(sumOf(count), 11)
  const inf = s.get('http_request_duration_seconds_bucket') ?? []
  assert.equal(sumOf(inf, (l) => l.le === '+Inf'), 11)
  assert.equal(sumOf(inf, (l) => l.le === '+Inf' && l.route === '/users/:id'), 5)

  if (LINT_WITH_PROMTOOL) {
    const r = promtoolCheckMetrics(res.body)
    // promtool lints style too (e.g. help text); only parse errors fail the exposition.
    assert.doesNotMatch(r.output, /error while linting|parse error|invalid/i, r.output)
  }
})

test('endpoint: false serves no /metrics, but scrape() still works; a custom path works', async (t) => {
  const off = await app({ endpoint: false })
  t.after(() => off.close())
  assert.equal((await off.inject('/metrics')).statusCode, 404)
  await off.inject('/users/1')
  const scrape = await off.pidMetrics.scrape()
  assert.equal(scrape.v, 1)
  assert.equal(scrape.pid, process.pid)
  const fam = scrape.metrics.find((m) => m.name === 'http_requests_total')
  // both /metrics (404 not_found) and /users/1 were counted
  assert.equal(fam?.values.reduce((a, v) => a + v.value, 0), 2)

  const custom = await app({ endpoint: '/internal/metrics', excludeRoutes: ['/health'] })
  t.after(() => custom.close())
  await custom.inject('/health')
  const res = await custom.inject('/internal/metrics')
  assert.equal(res.statusCode, 200)
  assert.equal(sumOf(samples(res.body).get('http_requests_total')), 0)
})

test('defaultMetrics: false and routeMetrics: false leave those families out', async (t) => {
  const f = await app({ defaultMetrics: false })
  t.after(() => f.close())
  await f.inject('/users/1')
  const s = samples((await f.inject('/metrics')).body)
  assert.ok(!s.has('process_cpu_user_seconds_total'))
  assert.equal(sumOf(s.get('http_requests_total')), 1)

  const g = await app({ routeMetrics: false })
  t.after(() => g.close())
  await g.inject('/users/1')
  const s2 = samples((await g.inject('/metrics')).body)
  assert.ok(!s2.has('http_requests_total'))
  assert.ok(s2.has('process_cpu_user_seconds_total'))
})

test('custom buckets', async (t) => {
  const f = await app({ buckets: [0.1, 1] })
  t.after(() => f.close())
  await f.inject('/users/1')
  const buckets = samples((await f.inject('/metrics')).body).get('http_request_duration_seconds_bucket') ?? []
  assert.deepEqual(buckets.map((b) => b.labels.le), ['0.1', '1', '+Inf'])
})

test('plugin metadata: name and fastify range; decorated instance', async (t) => {
  const meta = (pidMetrics as unknown as Record<symbol, { name: string, fastify: string }>)[Symbol.for('plugin-meta')]
  assert.equal(meta?.name, '@nclust/fastify-pidmetrics')
  assert.equal(meta?.fastify, '5.x')
  const f = await app()
  t.after(() => f.close())
  assert.equal(f.pidMetrics.labels.pid, String(process.pid))
  assert.equal(f.pidMetrics.labels.worker, process.env.NCLUST_WORKER ?? '0')
  assert.ok(f.hasDecorator('metrics'), 'fastify-metrics is underneath')
})

test('registering twice on one registry fails with a clear error', async () => {
  const registry = new Registry()
  const f = Fastify()
  await f.register(pidMetrics, { registry })
  const g = Fastify()
  await assert.rejects(async () => { await g.register(pidMetrics, { registry }) }, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_PIDMETRICS_DUPLICATE')
    assert.match(err.message, /new Registry\(\)/)
    return true
  })
  await f.close()
})

test('bad options are rejected naming the option, the value and what is allowed', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ endpoint: 'metrics' }, /^option endpoint must be a path starting with "\/" or false, got "metrics"$/],
    [{ buckets: [1, 0.5] }, /^option buckets must be a non-empty array of increasing finite numbers \(seconds\), got \[1,0\.5\]$/],
    [{ buckets: [] }, /^option buckets must be .*, got \[\]$/],
    [{ registry: {} }, /^option registry must be a prom-client Registry .*, got \{\}$/],
    [{ routeMetrics: 'yes' }, /^option routeMetrics must be true or false, got "yes"$/],
    [{ labels: { pid: 'x' } }, /^option labels\.pid must be a label name other than pid.*, got "x"$/],
    [{ labels: { 'bad-name': 'x' } }, /^option labels\.bad-name must be a valid Prometheus label name.*, got "x"$/],
    [{ worker: 3 }, /^option worker must be a non-empty string, got 3$/],
    [{ defaultMetrics: 'on' }, /^option defaultMetrics must be .*, got "on"$/],
    [{ excludeRoutes: '/health' }, /^option excludeRoutes must be an array.*, got "\/health"$/],
    [{ notFoundRoute: '' }, /^option notFoundRoute must be a non-empty string, got ""$/]
  ]
  for (const [opts, re] of cases) {
    const f = Fastify()
    await assert.rejects(async () => { await f.register(pidMetrics, { registry: new Registry(), ...(opts as object) }) }, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NCLUST_PIDMETRICS_INVALID_OPTION', `code for ${JSON.stringify(opts)}`)
      assert.ok(err instanceof TypeError)
      assert.match(err.message, re)
      return true
    })
  }
})

test('unknown option keys are refused naming them and the known ones', async () => {
  for (const [opts, re] of [
    [{ endpiont: '/metrics' }, /^unknown option endpiont, expected one of endpoint, registry/],
    [{ defaultMetrics: { register: 1 } }, /^unknown option defaultMetrics\.register, expected one of prefix, gcDurationBuckets/]
  ] as const) {
    const f = Fastify()
    await assert.rejects(async () => { await f.register(pidMetrics, { registry: new Registry(), ...(opts as object) }) }, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NCLUST_PIDMETRICS_UNKNOWN_OPTION')
      assert.match(err.message, re)
      return true
    })
  }
})

test('default registry is prom-client\'s global one: metrics created the usual way get pid/worker too', async (t) => {
  const { register, Counter } = await import('prom-client')
  const f = Fastify()
  await f.register(pidMetrics, { worker: '7' })
  f.get('/', async () => 'ok')
  await f.ready()
  t.after(async () => { await f.close(); register.clear() })
  assert.equal(f.pidMetrics.registry, register)
  const orders = new Counter({ name: 'orders_total', help: 'orders placed' })
  orders.inc(3)
  await f.inject('/')
  const s = samples((await f.inject('/metrics')).body)
  assert.deepEqual(s.get('orders_total')?.map((x) => [x.labels.pid, x.labels.worker, x.value]), [[String(process.pid), '7', 3]])
  assert.equal(sumOf(s.get('http_requests_total'), (l) => l.worker === '7'), 1)
  const scrape = await f.pidMetrics.scrape()
  assert.ok(scrape.metrics.some((m) => m.name === 'orders_total'), 'reaches the cluster scrape too')
})

// End to end through Fastify: the plugin's per-request fast path against the usual way (a prom-client
// Histogram and Counter fed in an onResponse hook of the same app, reading the same reply.elapsedTime,
// whose end time Fastify fixes when the response finishes), for random requests: the rendered
// families are byte-identical.
test('property: route metrics render the same text as prom-client fed per request, for any requests', async () => {
  const req = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD'),
    url: fc.oneof(fc.constantFrom('/users/1', '/users', '/metrics', '/no/such'), fc.constantFrom(200, 201, 204, 302, 404, 418, 500, 503).map((c) => `/s/${c}`))
  })
  await fc.assert(fc.asyncProperty(fc.array(req, { maxLength: 40 }), async (list) => {
    const registry = new Registry()
    const f = Fastify()
    try {
      await f.register(pidMetrics, { registry, defaultMetrics: false, worker: '2' })
      const ref = new Registry()
      ref.setDefaultLabels({ ...f.pidMetrics.labels })
      const helpOf = (name: string): string => (registry.getSingleMetric(name) as unknown as { help: string }).help
      const labelNames = ['method', 'route', 'status_code']
      const h = new Histogram({ name: ROUTE_HISTOGRAM, help: helpOf(ROUTE_HISTOGRAM), labelNames, buckets: DEFAULT_BUCKETS, registers: [ref] })
      const c = new Counter({ name: ROUTE_COUNTER, help: helpOf(ROUTE_COUNTER), labelNames, registers: [ref] })
      f.addHook('onResponse', (request, reply, done) => {
        const route = request.routeOptions.url ?? '__not_found__'
        if (route !== '/metrics') {
          const labels = { method: request.method, route, status_code: String(reply.statusCode) }
          h.observe(labels, reply.elapsedTime / 1000)
          c.inc(labels)
        }
        done()
      })
      f.get('/users/:id', async () => ({ ok: true }))
      f.post('/users', async (_req, reply) => reply.code(201).send({ ok: true }))
      f.route({ method: ['GET', 'POST', 'PUT', 'DELETE'], url: '/s/:code', handler: async (request, reply) => reply.code(Number((request.params as { code: string }).code)).send('') })
      await f.ready()
      for (const r of list) await f.inject({ method: r.method, url: r.url })
      for (const name of [ROUTE_HISTOGRAM, ROUTE_COUNTER]) {
        assert.equal(await registry.getSingleMetricAsString(name), await ref.getSingleMetricAsString(name))
      }
    } finally {
      await f.close()
    }
  }), { numRuns: 40 })
})
