import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { clusterMetrics, RateWindow, SCRAPE_SERVER_LIMITS, spreadOf } from '../src/index.js'
import { resolveClusterMetricsOptions } from '../src/cluster-metrics.js'
import { exitCodeOf } from '../src/supervisor-metrics.js'
import { RESTART_REASONS, SHUTDOWN_REASONS } from '@nclust/fastify-cluster'
import { waitFor } from '../../../test/helpers/index.ts'
import { assertServerLimits } from '../../../test/helpers/server-limits.ts'
import { FakePrimary, FakeWorker } from './fake-cluster.js'
import { promtoolCheckMetrics, LINT_WITH_PROMTOOL, samples, sumOf } from './helpers.js'

async function get (url: string): Promise<{ status: number, body: string, ms: number, type: string }> {
  const start = Date.now()
  const res = await request(url, { headersTimeout: 20_000, bodyTimeout: 20_000 })
  const body = await res.body.text()
  return { status: res.statusCode, body, ms: Date.now() - start, type: String(res.headers['content-type']) }
}

async function fleet (n: number, basePid: number): Promise<FakePrimary> {
  const workers: FakeWorker[] = []
  for (let i = 0; i < n; i++) workers.push(await FakeWorker.start(i, basePid + i))
  return new FakePrimary(workers)
}

test('the primary serves one scrape over HTTP; a slow worker is reported, not waited for', async (t) => {
  const primary = await fleet(2, 5000)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1', timeout: 300 })
  assert.equal(server.enabled, true)
  assert.match(server.url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
  await primary.fleet[0]?.hit(10)
  await primary.fleet[1]?.hit(5)

  const ok = await get(server.url ?? '')
  assert.equal(ok.status, 200)
  assert.match(ok.type, /version=0\.0\.4/)
  let s = samples(ok.body)
  if (LINT_WITH_PROMTOOL) {
    // promtool parses with Prometheus's own parser: a duplicated family or series would be an error.
    const lint = promtoolCheckMetrics(ok.body)
    assert.doesNotMatch(lint.output, /error while linting|parsing error|duplicate/i, lint.output)
  }
  assert.equal(sumOf(s.get('http_requests_total')), 15)
  assert.deepEqual((s.get('nclust_scrape_worker_up') ?? []).map((x) => [x.labels.worker, x.value]), [['0', 1], ['1', 1]])
  assert.equal(sumOf(s.get('nclust_workers_desired')), 2)
  assert.equal(sumOf(s.get('nclust_workers_ready')), 2)
  // The primary's own process metrics, labelled worker="primary".
  for (const name of ['process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_version_info']) {
    assert.equal((s.get(name) ?? []).filter((x) => x.labels.worker === 'primary' && x.labels.pid === String(process.pid)).length, 1, name)
  }
  const cpu = (n: string): number => sumOf(s.get(n), (l) => l.worker === 'primary')
  assert.ok(Math.abs(cpu('process_cpu_seconds_total') - cpu('process_cpu_user_seconds_total') - cpu('process_cpu_system_seconds_total')) < 1e-6, 'total = user + system')

  // Worker 1 blocks for 3 s: the scrape returns after ~timeout, worker 1 down, its counters still there.
  const slow = primary.fleet[1]
  assert.ok(slow !== undefined)
  slow.delay = 3000
  const late = await get(server.url ?? '')
  assert.equal(late.status, 200)
  assert.ok(late.ms < slow.delay, `scrape took ${late.ms} ms: it waited for the worker's ${slow.delay} ms answer instead of its 300 ms timeout`)
  s = samples(late.body)
  assert.deepEqual((s.get('nclust_scrape_worker_up') ?? []).map((x) => [x.labels.worker, x.value]), [['0', 1], ['1', 0]])
  assert.equal(sumOf(s.get('http_requests_total')), 15, 'the slow worker\'s counters are kept at their last value')
  assert.ok(sumOf(s.get('nclust_scrape_worker_duration_seconds'), (l) => l.worker === '1') >= 0.29)
  assert.equal(sumOf(s.get('nclust_scrape_worker_failures_total'), (l) => l.worker === '1'), 1)
  slow.delay = 0

  // A worker whose handler throws is reported down too.
  slow.fail = 'registry exploded'
  s = samples((await get(server.url ?? '')).body)
  assert.equal(sumOf(s.get('nclust_scrape_worker_up'), (l) => l.worker === '1'), 0)
  slow.fail = undefined

  // Other paths and methods.
  assert.equal((await get(server.url?.replace('/metrics', '/other') ?? '')).status, 404)
  const head = await request(server.url ?? '', { method: 'HEAD' })
  assert.equal(head.statusCode, 200)
  await head.body.dump()

  // Closing through the cluster's onClose closes the server.
  await primary.closers[0]?.()
  await assert.rejects(get(server.url ?? ''))
  await server.close() // idempotent
})

test('supervisor events become nclust_* series', async (t) => {
  const primary = await fleet(2, 6000)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1', primaryMetrics: false })
  t.after(() => server.close())
  const ev = primary.events
  ev.emit('worker-exit', { workerId: 1, pid: 6001, generation: 0, code: null, signal: 'SIGKILL', reason: 'signal' })
  ev.emit('restart', { workerId: 1, attempt: 1, delay: 100, reason: 'signal' })
  ev.emit('worker-exit', { workerId: 0, pid: 6000, generation: 0, code: 1, signal: null, reason: 'crash' })
  ev.emit('restart', { workerId: 0, attempt: 1, delay: 100, reason: 'crash' })
  ev.emit('restart', { workerId: 0, attempt: 2, delay: 200, reason: 'crash' })
  ev.emit('restart', { workerId: 1, attempt: 1, delay: 100, reason: 'hung' })
  ev.emit('restart', { workerId: 1, attempt: 0, delay: 0, reason: 'recycle' })
  ev.emit('crash-loop', { workerId: 0, failures: 5, windowMs: 1000, lastCode: 1, lastSignal: null })
  ev.emit('shutdown', { reason: 'signal', signal: 'SIGTERM' })
  ev.emit('reload', { phase: 'start' })
  assert.equal(sumOf(samples(await server.scrape()).get('nclust_reload_in_progress')), 1)
  ev.emit('reload', { phase: 'done', ok: true, replaced: 2, ms: 1500 })
  ev.emit('reload', { phase: 'start' })
  ev.emit('reload', { phase: 'done', ok: false, replaced: 0, failedWorkerId: 0, reason: 'crash', ms: 200 })
  const workerOne = primary.fleet[1]
  assert.ok(workerOne !== undefined)
  workerOne.alive = false

  const s = samples(await server.scrape())
  const restarts = s.get('nclust_worker_restarts_total')
  assert.equal(sumOf(restarts, (l) => l.worker === '0' && l.reason === 'crash'), 2)
  assert.equal(sumOf(restarts, (l) => l.worker === '1' && l.reason === 'signal'), 1)
  // Every reason the supervisor can restart for is zeroed per slot, so increase() sees the first one.
  for (const reason of RESTART_REASONS) {
    assert.equal((restarts ?? []).filter((x) => x.labels.reason === reason).length, 2, `reason ${reason} pre-set on both slots`)
  }
  assert.ok(RESTART_REASONS.includes('start-failed'), 'a failed start is a restart reason')
  assert.deepEqual([...new Set((restarts ?? []).map((x) => x.labels.reason))].sort(), [...RESTART_REASONS].sort(), 'no reason the supervisor never emits')
  assert.deepEqual((s.get('nclust_shutdowns_total') ?? []).map((x) => x.labels.reason).sort(), [...SHUTDOWN_REASONS].sort())
  assert.ok(SHUTDOWN_REASONS.includes('fatal'), 'an uncaught error in the primary is a shutdown reason')
  assert.equal(sumOf(restarts, (l) => l.worker === '1' && l.reason === 'hung'), 1)
  assert.equal(sumOf(restarts, (l) => l.worker === '1' && l.reason === 'recycle'), 1)
  for (const reason of ['hung', 'recycle', 'start-failed']) {
    assert.equal((restarts ?? []).filter((x) => x.labels.reason === reason).length, 2, `${reason} zeroed per slot so increase() sees the first one`)
  }
  assert.equal(sumOf(s.get('nclust_worker_last_exit_code'), (l) => l.worker === '1'), 137, '128 + SIGKILL')
  assert.equal(sumOf(s.get('nclust_worker_last_exit_code'), (l) => l.worker === '0'), 1)
  assert.equal(sumOf(s.get('nclust_worker_exits_total'), (l) => l.reason === 'crash'), 1)
  assert.equal(sumOf(s.get('nclust_shutdowns_total'), (l) => l.reason === 'signal'), 1)
  assert.equal(sumOf(s.get('nclust_crash_loops_total'), (l) => l.worker === '0'), 1)
  assert.equal(sumOf(s.get('nclust_reloads_total'), (l) => l.outcome === 'success'), 1)
  assert.equal(sumOf(s.get('nclust_reloads_total'), (l) => l.outcome === 'failure'), 1)
  assert.equal(sumOf(s.get('nclust_reload_in_progress')), 0)
  assert.equal(sumOf(s.get('nclust_reload_duration_seconds')), 0.2)
  assert.equal(sumOf(s.get('nclust_worker_ready'), (l) => l.worker === '1'), 0)
  assert.equal(sumOf(s.get('nclust_worker_ready'), (l) => l.worker === '0'), 1)
  assert.equal(sumOf(s.get('nclust_workers_ready')), 1)
  assert.equal(sumOf(s.get('nclust_scrape_worker_up'), (l) => l.worker === '1'), 0)
  assert.ok(!s.has('process_cpu_user_seconds_total') || (s.get('process_cpu_user_seconds_total') ?? []).every((x) => x.labels.worker !== 'primary'))
})

test('the primary\'s own process metrics: prom-client\'s names, one series each, in the workers\' families', async (t) => {
  const primary = await fleet(1, 6500)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1' })
  t.after(() => server.close())
  const body = await server.scrape()
  const s = samples(body)
  const linux = process.platform === 'linux'
  const names = [
    'process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total', 'process_start_time_seconds',
    'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes',
    'nodejs_external_memory_bytes', 'nodejs_version_info',
    ...(linux ? ['process_virtual_memory_bytes', 'process_heap_bytes', 'process_open_fds', 'process_max_fds'] : [])
  ]
  for (const name of names) {
    const mine = (s.get(name) ?? []).filter((x) => x.labels.worker === 'primary')
    assert.equal(mine.length, 1, name)
    assert.equal(mine[0]?.labels.pid, String(process.pid), name)
    assert.ok(Number.isFinite(mine[0]?.value) && (mine[0]?.value ?? -1) >= 0, `${name} = ${String(mine[0]?.value)}`)
    // The worker's series of the same name are in the same family: one HELP/TYPE.
    assert.ok((s.get(name) ?? []).some((x) => x.labels.worker === '0'), `${name} from the worker too`)
    assert.equal(body.match(new RegExp(`^# TYPE ${name} `, 'gm'))?.length, 1, name)
  }
  const value = (name: string): number => sumOf(s.get(name), (l) => l.worker === 'primary')
  assert.ok(Math.abs(value('process_start_time_seconds') - (Date.now() / 1000 - process.uptime())) <= 1)
  assert.ok(value('process_resident_memory_bytes') > 10e6)
  assert.ok(value('nodejs_heap_size_used_bytes') <= value('nodejs_heap_size_total_bytes'))
  assert.ok(value('nodejs_eventloop_lag_seconds') < 5)
  if (linux) assert.ok(value('process_open_fds') > 0 && value('process_open_fds') <= value('process_max_fds'))
  const version = (s.get('nodejs_version_info') ?? []).find((x) => x.labels.worker === 'primary')
  assert.equal(version?.labels.version, process.version)
  assert.equal(version?.labels.major, process.version.slice(1).split('.')[0])
})

test('imbalance gauges: per-worker rate, max/mean and coefficient of variation', async (t) => {
  const primary = await fleet(2, 7000)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1', imbalanceWindow: 1000 })
  t.after(() => server.close())
  const first = samples(await server.scrape())
  const firstAt = Date.now() // the first scrape was recorded at or before this instant
  // Before the first measured window the gauges are absent: a 0 would read as data ("perfectly even").
  for (const name of ['nclust_request_rate_imbalance_ratio', 'nclust_request_rate_cv', 'nclust_request_rate_window_seconds', 'nclust_worker_request_rate']) {
    assert.equal(first.get(name), undefined, `${name} absent before the first window`)
  }
  await primary.fleet[0]?.hit(90)
  await primary.fleet[1]?.hit(10)
  // The window needs 1 s between two scrapes: wait for the clock, not for a guess of how long hits take.
  await waitFor(() => Date.now() - firstAt >= 1000, 'one window length since the first scrape', 5000)
  const s = samples(await server.scrape())
  const ratio = sumOf(s.get('nclust_request_rate_imbalance_ratio'))
  assert.ok(Math.abs(ratio - 1.8) < 1e-9, `90/10 split: max/mean = 1.8, got ${ratio}`)
  const cv = sumOf(s.get('nclust_request_rate_cv'))
  assert.ok(Math.abs(cv - 0.8) < 1e-9, `cv = 0.8, got ${cv}`)
  const r0 = sumOf(s.get('nclust_worker_request_rate'), (l) => l.worker === '0')
  const r1 = sumOf(s.get('nclust_worker_request_rate'), (l) => l.worker === '1')
  assert.ok(Math.abs(r0 / r1 - 9) < 1e-9)
})

test('concurrent scrapes share one IPC round; the channel and timeout options reach requestAll', async (t) => {
  const primary = await fleet(2, 7500)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1', channel: 'custom:scrape', timeout: 2000 })
  t.after(() => server.close())
  await primary.fleet[0]?.hit(3)
  for (const w of primary.fleet) w.delay = 200 // a round in flight while the other scrapes arrive
  const bodies = await Promise.all([get(server.url ?? ''), get(server.url ?? ''), server.scrape()])
  assert.equal(primary.rounds.length, 1, 'three concurrent scrapes, one round of IPC')
  assert.deepEqual(primary.rounds[0], { channel: 'custom:scrape', timeout: 2000 })
  for (const b of [bodies[0].body, bodies[1].body, bodies[2]]) assert.equal(sumOf(samples(b).get('http_requests_total')), 3)
  for (const w of primary.fleet) w.delay = 0
  await server.scrape()
  assert.equal(primary.rounds.length, 2, 'a later scrape makes a new round')
})

test('RateWindow and spreadOf', () => {
  assert.deepEqual(spreadOf([5, 5, 5]), { maxOverMean: 1, cv: 0 })
  assert.ok(Number.isNaN(spreadOf([0, 0]).maxOverMean), 'no traffic: NaN, not a fake "even"')
  const w = new RateWindow(60_000)
  const slots = [0, 1]
  assert.equal(w.add(0, new Map([[0, 0], [1, 0]]), slots), undefined, 'one sample: no rate yet')
  const a = w.add(30_000, new Map([[0, 300], [1, 0]]), slots)
  assert.deepEqual([...(a?.rates ?? [])], [[0, 10], [1, 0]])
  assert.equal(a?.maxOverMean, 2)
  // 90 s later the window only looks back 60 s.
  w.add(60_000, new Map([[0, 600], [1, 0]]), slots)
  const b = w.add(90_000, new Map([[0, 600], [1, 600]]), slots)
  assert.equal(b?.seconds, 60)
  assert.deepEqual([...(b?.rates ?? [])], [[0, 5], [1, 10]])
})

test('single-process and worker roles: nothing served; disabled by option or METRICS_PORT=off', async () => {
  for (const role of ['single', 'worker']) {
    const s = await clusterMetrics({ role }, { port: 0 })
    assert.equal(s.enabled, false)
    assert.equal(s.url, undefined)
    await s.close()
  }
  const primary = await fleet(1, 8000)
  const off = await clusterMetrics(primary, { enabled: false })
  assert.equal(off.enabled, false)
  await primary.close()
  assert.equal(resolveClusterMetricsOptions({}, { METRICS_PORT: 'off' }).enabled, false)
  assert.equal(resolveClusterMetricsOptions({}, { METRICS_PORT: '9300' }).port, 9300)
  assert.equal(resolveClusterMetricsOptions({}, {}).port, 9091)
  assert.equal(resolveClusterMetricsOptions({}, {}).host, '127.0.0.1', 'loopback unless exposed on purpose')
  assert.equal(resolveClusterMetricsOptions({}, { METRICS_HOST: '0.0.0.0' }).host, '0.0.0.0')
  assert.equal(resolveClusterMetricsOptions({ host: '::' }, { METRICS_HOST: '0.0.0.0' }).host, '::')
})

/** An error with this `code` and a message matching `message`: both, never the text alone. */
const coded = (code: string, message: RegExp) => (err: Error & { code?: string }): boolean => {
  assert.equal(err.code, code, err.message)
  assert.match(err.message, message)
  return true
}

test('clusterMetrics rejects bad options and things that are not a handle', async () => {
  await assert.rejects(clusterMetrics({ role: 'primary' }, { port: 70000 }), coded('NCLUST_PIDMETRICS_INVALID_OPTION', /^option port must be an integer port 0-65535, got 70000$/))
  await assert.rejects(clusterMetrics({ role: 'primary' }, { timeout: 0 }), coded('NCLUST_PIDMETRICS_INVALID_OPTION', /^option timeout must be .*, got 0$/))
  await assert.rejects(clusterMetrics({ role: 'primary' }, { path: 'metrics' }), coded('NCLUST_PIDMETRICS_INVALID_OPTION', /^option path must be .*, got "metrics"$/))
  assert.throws(() => resolveClusterMetricsOptions({}, { METRICS_PORT: 'abc' }), coded('NCLUST_PIDMETRICS_INVALID_OPTION', /^env METRICS_PORT must be an integer port 0-65535, or "off", got "abc"$/))
  assert.throws(() => resolveClusterMetricsOptions({}, { METRICS_PORT: '-0' }), coded('NCLUST_PIDMETRICS_INVALID_OPTION', /^env METRICS_PORT must be .*, got "-0"$/))
  assert.throws(() => resolveClusterMetricsOptions({ potr: 1 }, {}), coded('NCLUST_PIDMETRICS_UNKNOWN_OPTION', /^unknown option potr, expected one of port, host/))
  await assert.rejects(clusterMetrics(undefined), coded('NCLUST_PIDMETRICS_HANDLE', /./))
  await assert.rejects(clusterMetrics({ role: 'primary' }), coded('NCLUST_PIDMETRICS_HANDLE', /needs workers\(\)/))
  // Port in use: a clear listen error.
  const primary = await fleet(1, 9000)
  const a = await clusterMetrics(primary, { port: 0, host: '127.0.0.1' })
  await assert.rejects(clusterMetrics(primary, { port: a.port ?? 0, host: '127.0.0.1' }), coded('EADDRINUSE', /EADDRINUSE/))
  await a.close()
  await primary.close()
})

test('exitCodeOf', () => {
  assert.equal(exitCodeOf(0, null), 0)
  assert.equal(exitCodeOf(null, 'SIGTERM'), 143)
  assert.equal(exitCodeOf(null, null), -1)
})

test('the scrape server caps its connections and closes a client that trickles its headers', async (t) => {
  const primary = await fleet(1, 9500)
  t.after(() => primary.close())
  const server = await clusterMetrics(primary, { port: 0, host: '127.0.0.1' })
  t.after(() => server.close())
  const { slowClosedAfterMs } = await assertServerLimits(server.port ?? 0, '/metrics', SCRAPE_SERVER_LIMITS)
  t.diagnostic(`slow headers closed after ${slowClosedAfterMs} ms (headersTimeout ${SCRAPE_SERVER_LIMITS.headersTimeout})`)
})
