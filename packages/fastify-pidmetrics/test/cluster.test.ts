// Real clusters: the fixture is forked as a real primary with 2 real workers, scraped over HTTP.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { freePort, spawnNode, spawnProcess, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'
import { PROMETHEUS, requireTool, samples, skipWithout, sumOf } from './helpers.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/cluster.mjs', import.meta.url))

interface Cluster {
  child: ChildProcess
  port: number
  metricsUrl: string
  workers: Array<{ workerId: number, pid: number }>
  waitFor: Spawned['waitForLine']
  stop: () => Promise<void>
  ready: LogLine
}

/** The fixture as a real primary (spawned by the shared helper); resolves once it logged 'ready'. */
async function startCluster (t: { after: (fn: () => Promise<void>) => void }, env: Record<string, string> = {}): Promise<Cluster> {
  const port = await freePort()
  const metricsPort = await freePort()
  const p = spawnNode(FIXTURE, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', FIXTURE_METRICS_PORT: String(metricsPort), ...env } })
  /** SIGTERM (graceful), SIGKILL after 15 s; then the shared cleanup kills whatever is left. */
  const stop = async (): Promise<void> => {
    try {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill('SIGTERM')
        const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000)
        await p.exited
        clearTimeout(timer)
      }
    } finally {
      await p.cleanup()
    }
  }
  // Cleanup registered before anything can fail; stop() is idempotent.
  t.after(stop)
  const startFailed = (l: LogLine): boolean => l.msg === 'event worker-exit' && (l.event as { reason?: string }).reason === 'start-failed'
  let ready: LogLine
  try {
    ready = await p.waitForLine((l) => l.msg === 'ready' || startFailed(l), 60_000, 'ready')
    if (startFailed(ready)) throw new Error(`a worker failed to start: ${JSON.stringify(ready.event)}`)
  } catch (err) {
    await p.cleanup()
    throw err
  }
  return { child: p.child, port, metricsUrl: String(ready.metricsUrl), workers: ready.workers as Cluster['workers'], waitFor: p.waitForLine, stop, ready }
}

async function scrape (url: string): Promise<{ ms: number, s: ReturnType<typeof samples>, body: string }> {
  const t0 = Date.now()
  const res = await request(url, { headersTimeout: 30_000, bodyTimeout: 30_000 })
  const body = await res.body.text()
  assert.equal(res.statusCode, 200, body)
  return { ms: Date.now() - t0, s: samples(body), body }
}

/** One request on a fresh connection, so the primary's round-robin spreads them over the workers. */
async function hit (port: number, path = '/'): Promise<Record<string, unknown>> {
  const res = await request(`http://127.0.0.1:${port}${path}`, { reset: true, headersTimeout: 20_000 })
  assert.equal(res.statusCode, 200)
  return await res.body.json() as Record<string, unknown>
}

const routeTotal = (s: ReturnType<typeof samples>, where: (l: Record<string, string>) => boolean = () => true): number =>
  sumOf(s.get('http_requests_total'), where)

test('real cluster of 2: counts add up, kill -9 keeps the total, a blocked worker does not stall the scrape', async (t) => {
  // A long first restart delay keeps the killed slot empty while it is scraped (the scrape takes
  // well under a second; 10 s leaves a loaded machine room).
  const c = await startCluster(t, { FIXTURE_BACKOFF: JSON.stringify({ initialDelay: 10_000 }), FIXTURE_SCRAPE_TIMEOUT: '1000' })
  assert.equal(c.workers.length, 2)
  const pids = c.workers.map((w) => String(w.pid)).sort()
  const slotOf = (pid: unknown): string => String(c.workers.find((w) => w.pid === pid)?.workerId)

  // 100 requests over two routes, each on a fresh connection: counted per worker from the answers.
  const perWorker = new Map<string, number>()
  for (let i = 0; i < 100; i++) {
    const w = slotOf((await hit(c.port, i % 2 === 0 ? '/' : `/users/${i}`)).pid)
    perWorker.set(w, (perWorker.get(w) ?? 0) + 1)
  }
  assert.deepEqual([...perWorker.keys()].sort(), ['0', '1'], 'the round-robin reached both workers')
  const first = await scrape(c.metricsUrl)
  const cpuPids = (first.s.get('process_cpu_user_seconds_total') ?? []).filter((x) => x.labels.worker !== 'primary').map((x) => x.labels.pid).sort()
  assert.deepEqual(cpuPids, pids, 'both workers present with their pid labels')
  assert.deepEqual((first.s.get('http_requests_total') ?? []).map((x) => x.labels.route).filter((r, i, a) => a.indexOf(r) === i).sort(), ['/', '/users/:id'])
  assert.equal(routeTotal(first.s), 100, 'the request counts add up to 100')
  for (const x of first.s.get('http_requests_total') ?? []) {
    assert.ok(pids.includes(x.labels.pid ?? ''), `series carries a worker pid: ${JSON.stringify(x.labels)}`)
    assert.equal(x.labels.worker, String(c.workers.find((w) => String(w.pid) === x.labels.pid)?.workerId))
  }
  for (const w of ['0', '1']) assert.equal(routeTotal(first.s, (l) => l.worker === w), perWorker.get(w), `worker ${w} counted exactly what it answered`)
  assert.deepEqual((first.s.get('nclust_scrape_worker_up') ?? []).map((x) => x.value), [1, 1])

  // A worker blocks its event loop for 6 s; the scrape (1 s per-worker timeout) is back while it is
  // still blocked, and reports it. The bound is the worker's own block, not a guess of the scrape time.
  const blocked = await hit(c.port, '/block?ms=6000') as { workerId: number, until: number }
  const slow = await scrape(c.metricsUrl)
  assert.ok(Date.now() < blocked.until, `the scrape returned ${Date.now() - blocked.until} ms after the worker unblocked: it waited for it`)
  assert.equal(sumOf(slow.s.get('nclust_scrape_worker_up'), (l) => l.worker === String(blocked.workerId)), 0, 'blocked worker reported down')
  assert.equal(sumOf(slow.s.get('nclust_scrape_worker_up'), (l) => l.worker !== String(blocked.workerId)), 1)
  assert.equal(routeTotal(slow.s), 100, 'the blocked worker\'s counters are still there, frozen at its last good scrape')
  // Wait until it answers again.
  await waitFor(async () => sumOf((await scrape(c.metricsUrl)).s.get('nclust_scrape_worker_up')) === 2, 'the blocked worker to answer again', 30_000)

  // kill -9 one worker mid-test. No request is sent between this scrape and the next ones: exact totals.
  const before = await scrape(c.metricsUrl)
  const totalBefore = routeTotal(before.s)
  assert.equal(totalBefore, 101, '100 requests and the /block one')
  const victim = c.workers[1]
  assert.ok(victim !== undefined)
  const victimTotal = routeTotal(before.s, (l) => l.pid === String(victim.pid))
  process.kill(victim.pid, 'SIGKILL')
  await c.waitFor((l) => l.msg === 'event worker-exit' && (l.event as { pid: number }).pid === victim.pid, 20_000, 'worker-exit of the victim')
  const afterKill = await scrape(c.metricsUrl)
  assert.equal(sumOf(afterKill.s.get('nclust_scrape_worker_up'), (l) => l.worker === String(victim.workerId)), 0, 'dead worker reported')
  assert.equal(sumOf(afterKill.s.get('nclust_worker_ready'), (l) => l.worker === String(victim.workerId)), 0)
  assert.equal(routeTotal(afterKill.s), totalBefore, 'the cluster total neither drops nor double counts the dead worker')
  assert.equal(routeTotal(afterKill.s, (l) => l.pid === String(victim.pid)), victimTotal, 'kept under its last pid, at its last values')
  assert.equal(sumOf(afterKill.s.get('nclust_worker_last_exit_code'), (l) => l.worker === String(victim.workerId)), 137)

  // The replacement comes up under a new pid; the slot's total carries on from the dead worker's.
  const ready = await c.waitFor((l) => l.msg === 'event worker-ready' && (l.event as { workerId: number }).workerId === victim.workerId && (l.event as { pid: number }).pid !== victim.pid, 60_000, 'replacement ready')
  const newPid = (ready.event as { pid: number }).pid
  let onNew = 0
  for (let i = 0; i < 20; i++) if ((await hit(c.port)).pid === newPid) onNew += 1
  const replaced = await scrape(c.metricsUrl)
  assert.equal(routeTotal(replaced.s), totalBefore + 20, `total after 20 more requests, was ${totalBefore}`)
  assert.equal(routeTotal(replaced.s, (l) => l.pid === String(victim.pid)), 0, 'the dead pid is folded into the new one')
  assert.equal(routeTotal(replaced.s, (l) => l.pid === String(newPid)), victimTotal + onNew, 'the new pid starts from the dead one\'s total, plus what it answered')
  assert.equal(sumOf(replaced.s.get('nclust_worker_restarts_total'), (l) => l.worker === String(victim.workerId) && l.reason === 'signal'), 1)
})

test('real cluster scaled with SIGTTIN / SIGTTOU: nclust_workers_desired follows, the new slot has zeroed restart series', async (t) => {
  const c = await startCluster(t)
  const desired = async (): Promise<{ desired: number, ready: number, s: ReturnType<typeof samples> }> => {
    const { s } = await scrape(c.metricsUrl)
    return { desired: sumOf(s.get('nclust_workers_desired')), ready: sumOf(s.get('nclust_workers_ready')), s }
  }
  assert.equal((await desired()).desired, 2)
  c.child.kill('SIGTTIN')
  const up = await waitFor(async () => { const d = await desired(); return d.desired === 3 && d.ready === 3 && d }, 'desired 3, 3 ready', 60_000)
  const restarts = up.s.get('nclust_worker_restarts_total') ?? []
  for (const reason of ['crash', 'hung', 'recycle']) {
    assert.equal(restarts.filter((x) => x.labels.worker === '2' && x.labels.reason === reason).length, 1, `worker 2 ${reason} zeroed`)
  }
  c.child.kill('SIGTTOU')
  await waitFor(async () => { const d = await desired(); return d.desired === 2 && d.ready === 2 }, 'desired 2, 2 ready', 60_000)
})

test('the channel option: set on both sides the scrape works; on one side only, every worker is reported down', async (t) => {
  const both = await startCluster(t, { FIXTURE_CHANNEL: 'myapp:metrics' })
  for (let i = 0; i < 4; i++) await hit(both.port)
  const ok = await scrape(both.metricsUrl)
  assert.deepEqual((ok.s.get('nclust_scrape_worker_up') ?? []).map((x) => x.value), [1, 1])
  assert.equal(routeTotal(ok.s), 4)
  await both.stop()
  const one = await startCluster(t, { FIXTURE_CHANNEL: 'myapp:metrics', FIXTURE_PRIMARY_CHANNEL: 'pidmetrics:scrape' })
  const down = await scrape(one.metricsUrl)
  assert.deepEqual((down.s.get('nclust_scrape_worker_up') ?? []).map((x) => x.value), [0, 0], 'the workers do not answer the default channel')
})

test('single-process mode (WORKER_COUNT=1): no primary endpoint, the app\'s own /metrics is the target', async (t) => {
  const c = await startCluster(t, { WORKER_COUNT: '1' })
  assert.equal(c.ready.single, true)
  assert.equal(c.ready.metricsEnabled, false)
  assert.equal(c.ready.metricsUrl, null)
  for (let i = 0; i < 5; i++) await hit(c.port, `/users/${i}`)
  const own = await scrape(`http://127.0.0.1:${c.port}/metrics`)
  const total = own.s.get('http_requests_total') ?? []
  assert.equal(sumOf(total), 5)
  for (const x of total) {
    assert.equal(x.labels.pid, String(c.child.pid))
    assert.equal(x.labels.worker, '0')
    assert.equal(x.labels.route, '/users/:id')
  }
  assert.ok(!own.s.has('nclust_scrape_worker_up'), 'no cluster series in single-process mode')
})

test('real Prometheus scrapes the primary every second: sum by (worker) (http_requests_total)', { skip: skipWithout(PROMETHEUS, 'prometheus') }, async (t) => {
  // Per-worker timeout well under Prometheus's 1 s scrape_timeout, so a slow worker cannot fail the scrape.
  const c = await startCluster(t, { FIXTURE_SCRAPE_TIMEOUT: '500' })
  for (let i = 0; i < 40; i++) await hit(c.port)
  const dir = mkdtempSync(join(tmpdir(), 'pidmetrics-prom-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const target = new URL(c.metricsUrl)
  writeFileSync(join(dir, 'prometheus.yml'), [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'rule_files:',
    `  - ${fileURLToPath(new URL('../prometheus/alerts.yml', import.meta.url))}`,
    'scrape_configs:',
    '  - job_name: nclust',
    `    metrics_path: ${target.pathname}`,
    '    static_configs:',
    `      - targets: ['${target.host}']`,
    ''
  ].join('\n'))
  const promPort = await freePort()
  // Tracked by the shared helper: killed on cleanup and if this test process dies.
  const prom = spawnProcess(requireTool(PROMETHEUS, 'prometheus'), [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${promPort}`
  ])
  t.after(() => prom.cleanup())
  const promLog = (): string => prom.output().slice(-4000)

  const query = async (q: string): Promise<Array<{ metric: Record<string, string>, value: [number, string] }>> => {
    const res = await request(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`, { headersTimeout: 10_000 })
    const body = await res.body.json() as { status: string, data: { result: Array<{ metric: Record<string, string>, value: [number, string] }> } }
    assert.equal(body.status, 'success')
    return body.data.result
  }
  const deadline = Date.now() + 60_000
  let result: Awaited<ReturnType<typeof query>> = []
  for (;;) {
    try {
      result = await query('sum by (worker) (http_requests_total)')
      const total = result.reduce((a, r) => a + Number(r.value[1]), 0)
      if (result.length === 2 && total === 40) break
    } catch { /* not listening yet */ }
    assert.ok(Date.now() < deadline, `Prometheus never saw both workers with 40 requests: ${JSON.stringify(result)}; log: ${promLog()}`)
    assert.equal(prom.child.exitCode, null, `prometheus exited: ${promLog()}`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  assert.deepEqual(result.map((r) => r.metric.worker).sort(), ['0', '1'])
  const up = await query('max_over_time(up{job="nclust"}[1m])')
  assert.equal(up[0]?.value[1], '1')
  const scrapeUp = await query('max_over_time(nclust_scrape_worker_up[1m])')
  assert.deepEqual(scrapeUp.map((r) => [r.metric.worker, r.value[1]]).sort(), [['0', '1'], ['1', '1']])
  // The rules file loaded (the recording rule exists as a rule, whether or not it has data yet).
  const rules = await request(`http://127.0.0.1:${promPort}/api/v1/rules`, { headersTimeout: 10_000 })
  const rulesBody = await rules.body.json() as { data: { groups: Array<{ rules: Array<{ name: string }> }> } }
  assert.ok(rulesBody.data.groups.some((g) => g.rules.some((r) => r.name === 'NclustWorkerStarved')), 'alerts.yml loaded')
})
