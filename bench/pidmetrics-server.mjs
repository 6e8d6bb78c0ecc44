// One benchmark server variant, started by bench/pidmetrics.mjs (pinned with taskset -c 0).
// Prints "READY <port>" on stdout once listening. GET /__cpu answers this process's CPU time in µs
// (user + system), so the driver measures server CPU per request without counting its own work.
import Fastify from 'fastify'

// `<variant>-before` (e.g. pidmetrics-before): the same variant with the plugin's previous build, a copy
// of its dist/ in bench/.cache/pidmetrics-before/ (see bench/README.md), so before and after run side
// by side in one bench run. PIDMETRICS_MODULE: any other build (a path to its index.js).
const arg = process.argv[2] ?? 'bare'
const before = arg.endsWith('-before')
const variant = before ? arg.slice(0, -'-before'.length) : arg
const pidmetricsModule = before
  ? new URL('.cache/pidmetrics-before/dist/index.js', import.meta.url).href
  : process.env.PIDMETRICS_MODULE ?? '@nclust/fastify-pidmetrics'
const app = Fastify({ logger: false })

switch (variant) {
  case 'bare':
    break
  case 'empty-hook':
    app.addHook('onResponse', (_request, _reply, done) => { done() })
    break
  case 'pidmetrics': {
    const { pidMetrics } = await import(pidmetricsModule)
    await app.register(pidMetrics)
    break
  }
  case 'drain': {
    const { default: clusterDrain } = await import('@nclust/fastify-drain')
    await app.register(clusterDrain)
    break
  }
  case 'both': {
    // What an nclust app usually runs: the drain and pidMetrics with its defaults.
    const { default: clusterDrain } = await import('@nclust/fastify-drain')
    const { pidMetrics } = await import(pidmetricsModule)
    await app.register(clusterDrain)
    await app.register(pidMetrics)
    break
  }
  case 'import-cluster':
    // What importing @nclust/fastify-cluster (which pidMetrics imports for currentWorker) does to a request.
    await import('@nclust/fastify-cluster')
    break
  case 'import-pidmetrics':
    await import(pidmetricsModule)
    break
  case 'pidmetrics-nothing': {
    // The plugin with every part off: what registering it costs by itself.
    const { pidMetrics } = await import(pidmetricsModule)
    await app.register(pidMetrics, { defaultMetrics: false, routeMetrics: false, endpoint: false })
    break
  }
  case 'import-prom':
    await import('prom-client')
    break
  case 'fastify-metrics-endpoint': {
    // fastify-metrics as pidMetrics registers it: the endpoint only, its own route and default metrics off.
    const { default: fastifyMetrics } = await import('fastify-metrics')
    await app.register(fastifyMetrics, { defaultMetrics: { enabled: false }, routeMetrics: { enabled: false } })
    break
  }
  case 'url-hook':
    // What reading the route pattern costs: Fastify's request.routeOptions getter builds an object.
    app.addHook('onResponse', (request, _reply, done) => { if (request.routeOptions.url === '') throw new Error(); done() })
    break
  case 'elapsed-hook':
    // What reading the duration costs: reply.elapsedTime (performance.now() - start).
    app.addHook('onResponse', (_request, reply, done) => { if (reply.elapsedTime < 0) throw new Error(); done() })
    break
  case 'pidmetrics-no-default': {
    const { pidMetrics } = await import(pidmetricsModule)
    await app.register(pidMetrics, { defaultMetrics: false })
    break
  }
  case 'prom-histogram': {
    // The usual per-request way: a prom-client Histogram and Counter updated in onResponse.
    const { Histogram, Counter } = await import('prom-client')
    const labelNames = ['method', 'route', 'status_code']
    const h = new Histogram({ name: 'http_request_duration_seconds', help: 'h', labelNames })
    const c = new Counter({ name: 'http_requests_total', help: 'c', labelNames })
    app.addHook('onResponse', (request, reply, done) => {
      const labels = { method: request.method, route: request.routeOptions.url ?? '__not_found__', status_code: reply.statusCode }
      h.observe(labels, reply.elapsedTime / 1000)
      c.inc(labels)
      done()
    })
    break
  }
  case 'default-metrics-only': {
    // prom-client collectDefaultMetrics alone, no hook: what the process/Node metrics cost.
    const { collectDefaultMetrics } = await import('prom-client')
    collectDefaultMetrics()
    break
  }
  case 'gc-observer-only': {
    // Only a PerformanceObserver on GC entries, as prom-client's nodejs_gc_duration_seconds uses.
    const { PerformanceObserver } = await import('node:perf_hooks')
    new PerformanceObserver(() => {}).observe({ entryTypes: ['gc'] })
    break
  }
  case 'fastify-metrics': {
    const { default: fastifyMetrics } = await import('fastify-metrics')
    await app.register(fastifyMetrics.default ?? fastifyMetrics, { endpoint: '/metrics' })
    break
  }
  default:
    console.error(`unknown variant ${variant}`)
    process.exit(2)
}

app.get('/', async () => ({ hello: 'world' }))
app.get('/__cpu', { config: { disableMetrics: true } }, async () => {
  const u = process.cpuUsage()
  return { us: u.user + u.system }
})
await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`READY ${app.server.address().port}\n`)
process.on('SIGTERM', () => { app.close().then(() => process.exit(0)) })
