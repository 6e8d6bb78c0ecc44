// In-process cost of the route part of @nclust/fastify-pidmetrics, without HTTP: what the onResponse
// hook body does per request (route pattern lookup, status, duration, bucket update), timed over many
// calls on a real Fastify request/reply pair. Far less noisy than the HTTP bench on a shared machine.
//   node bench/pidmetrics-micro.mjs
import Fastify from 'fastify'
import { Histogram, Counter, Registry } from 'prom-client'
import { pidMetrics } from '@nclust/fastify-pidmetrics'

const N = Number(process.env.N ?? 2_000_000)
const app = Fastify()
await app.register(pidMetrics, { registry: new Registry() })
let captured
app.addHook('onResponse', (request, reply, done) => { captured = { request, reply }; done() })
app.get('/users/:id', async () => 'ok')
await app.ready()
await app.inject('/users/1')
const { request, reply } = captured
// Find the plugin's hook in the route context's onResponse list (Fastify internals: bench only).
const ctxSym = Object.getOwnPropertySymbols(request).find((s) => String(s) === 'Symbol(fastify.context)')
const ctx = request[ctxSym]
const ours = (ctx?.onResponse ?? []).find((fn) => /pidMetricsOnResponse$/.test(fn.name))
if (!ours) throw new Error('pidMetricsOnResponse hook not found')

function time (label, fn) {
  for (let i = 0; i < 100_000; i++) fn() // warm-up
  const t0 = process.cpuUsage()
  for (let i = 0; i < N; i++) fn()
  const d = process.cpuUsage(t0)
  const ns = ((d.user + d.system) * 1000) / N
  console.log(`${label.padEnd(48)} ${ns.toFixed(0).padStart(6)} ns CPU/call`)
  return ns
}
const noop = () => {}
time('pidMetrics onResponse hook body', () => ours(request, reply, noop))
time('  request.routeOptions.url alone', () => request.routeOptions.url)
const labelNames = ['method', 'route', 'status_code']
const reg = new Registry()
const h = new Histogram({ name: 'h', help: 'h', labelNames, registers: [reg] })
const c = new Counter({ name: 'c', help: 'c', labelNames, registers: [reg] })
time('prom-client Histogram.observe + Counter.inc', () => {
  const labels = { method: request.method, route: request.routeOptions.url, status_code: reply.statusCode }
  h.observe(labels, reply.elapsedTime / 1000)
  c.inc(labels)
})
const t0 = process.hrtime.bigint()
const text = await app.pidMetrics.registry.metrics()
console.log(`one scrape of this registry: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms, ${text.length} bytes`)
await app.close()
