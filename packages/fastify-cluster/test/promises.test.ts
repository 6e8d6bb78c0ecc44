// README promises of @nclust/fastify-cluster that the other files do not cover, each through the
// public API of real entry scripts (test/fixtures/*-app.mjs), real workers and real signals.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { freePort, get, distinct, isAlive, spawnNode, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'
import { fixturePath, isEvent, primaryReady } from './start-cluster.ts'

const event = isEvent
/** An event's payload, as the handle emitted it (the fixtures print a worker's pid as workerPid). */
const ev = <T = Record<string, unknown>>(l: LogLine): T => {
  const { role: _role, event: _event, pid: _pid, workerPid, ...payload } = l
  return (workerPid !== undefined ? { ...payload, pid: workerPid } : payload) as T
}

async function start (t: { after: (fn: () => Promise<void>) => void }, env: Record<string, string>, readyCount = 2, app = 'app.mjs'): Promise<{ p: Spawned, port: number }> {
  const port = env.PORT !== undefined ? Number(env.PORT) : await freePort()
  const p = spawnNode(fixturePath(app), { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', ...env } })
  t.after(() => p.cleanup())
  if (readyCount > 0) await waitFor(() => p.lines.filter(primaryReady).length >= readyCount, `${readyCount} workers ready`, 90_000)
  return { p, port }
}

test('drain: false registers no drain plugin; the default registers it; SIGTERM still exits 0', async (t) => {
  const off = await start(t, { FIXTURE_OPTIONS: JSON.stringify({ drain: false }) })
  assert.deepEqual((await get(off.port, '/plugins')).json(), { drain: false, drainAndClose: 'undefined' })
  off.p.child.kill('SIGTERM')
  assert.equal((await off.p.waitForExit()).code, 0)
  const on = await start(t, {})
  assert.deepEqual((await get(on.port, '/plugins')).json(), { drain: true, drainAndClose: 'function' })
  on.p.child.kill('SIGTERM')
  assert.equal((await on.p.waitForExit()).code, 0)
})

test('the drain deadline is derived from shutdownTimeout (20000 -> 18000 ms): a held request is cut there, before the SIGKILL', async (t) => {
  // 10 % of 20 s leaves the drain 2 s before the primary's SIGKILL: room for a loaded machine.
  const { p, port } = await start(t, { SHUTDOWN_TIMEOUT: '20000' })
  const held = get(port, '/hold')
  await waitFor(() => p.lines.some((l) => l.msg === 'incoming request' && (l.req as { url?: string } | undefined)?.url === '/hold'), 'the held request in flight')
  p.child.kill('SIGTERM')
  const res = await held
  assert.equal(res.status, 503, 'cut by the drain at its deadline')
  const cut = await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('drain: deadline of'), 10_000, 'the drain deadline line')
  assert.match(String(cut.msg), /^drain: deadline of 18000 ms reached, cut 1 request/)
  assert.equal((await p.waitForExit()).code, 0, 'every worker closed by itself: the SIGKILL was not needed')
  assert.doesNotMatch(p.output(), /SIGKILL/)
})

test('port 0: one random port shared by every worker', async (t) => {
  const { p } = await start(t, { PORT: '0' })
  const workerReady = (): LogLine[] => p.lines.filter((l) => l.role === 'worker' && l.msg === 'worker ready')
  await waitFor(() => workerReady().length === 2, 'both workers\' own ready lines')
  const addresses = workerReady().map((l) => String(l.address))
  assert.equal(addresses[0], addresses[1], 'both workers listen on the same address')
  const port = Number(new URL(addresses[0] ?? '').port)
  assert.ok(port > 0)
  const seen = await distinct(port, '/', (b: { workerId: number }) => b.workerId, 2)
  assert.deepEqual([...seen].sort(), [0, 1])
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('programmatic reload() resolves its result; state, reload and closed events; close() resolves the code and does not exit', async (t) => {
  const { p } = await start(t, {}, 2, 'api-app.mjs')
  const result = await p.waitForLine((l) => l.msg === 'api reload result', 90_000, 'the reload result')
  const r = result.result as { ok: boolean, replaced: number, ms: number }
  assert.equal(r.ok, true)
  assert.equal(r.replaced, 2)
  assert.equal(typeof r.ms, 'number')
  assert.deepEqual((result.workers as Array<{ workerId: number, generation: number, state: string }>).map((w) => [w.workerId, w.generation, w.state]), [[0, 1, 'ready'], [1, 1, 'ready']])
  const closed = await p.waitForLine((l) => l.msg === 'api close resolved', 60_000, 'close() resolved')
  assert.equal(closed.code, 0)
  assert.deepEqual(closed.workers, [])
  await p.waitForLine((l) => l.msg === 'api still alive after close', 10_000, 'the process to outlive close()')
  assert.equal((await p.waitForExit()).code, 42, 'the fixture\'s own exit code: close() did not exit')

  const reloads = p.lines.filter(event('reload')).map((l) => ev<{ phase: string, ok?: boolean, replaced?: number }>(l))
  assert.deepEqual(reloads.map((e) => [e.phase, e.ok, e.replaced]), [['start', undefined, undefined], ['done', true, 2]])
  // Every slot transition, per process: starting -> ready -> draining -> stopped. The first workers
  // are forked before startClustered returns, so their fork (null -> starting) precedes any listener.
  const states = p.lines.filter(event('state')).map((l) => ev<{ pid: number, from: string | null, to: string, generation: number }>(l))
  const byPid = new Map<number, { generation: number, path: string[] }>()
  for (const s of states) byPid.set(s.pid, { generation: s.generation, path: [...(byPid.get(s.pid)?.path ?? []), `${String(s.from)}>${s.to}`] })
  assert.equal(byPid.size, 4, 'two generations of two slots')
  for (const [pid, { generation, path }] of byPid) {
    const full = ['null>starting', 'starting>ready', 'ready>draining', 'draining>stopped']
    assert.deepEqual(path, generation === 0 ? full.slice(1) : full, `pid ${pid}, generation ${generation}`)
  }
  const closedEvents = p.lines.filter(event('closed')).map((l) => ev<{ code: number, killed: unknown[] }>(l))
  assert.deepEqual(closedEvents, [{ code: 0, killed: [] }])
  const shutdowns = p.lines.filter(event('shutdown')).map((l) => ev<{ reason: string }>(l).reason)
  assert.deepEqual(shutdowns, ['close'])
})

test('an old worker stuck closing during a reload is SIGKILLed at shutdownTimeout and the reload completes', async (t) => {
  const { p } = await start(t, { FIXTURE_STUCK: 'first-generation', SHUTDOWN_TIMEOUT: '1500' }, 2, 'stuck-close-app.mjs')
  const oldPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  p.child.kill('SIGHUP')
  const done = await p.waitForLine((l) => event('reload')(l) && ev<{ phase: string }>(l).phase === 'done', 90_000, 'the reload to finish')
  assert.deepEqual([ev<{ ok: boolean }>(done).ok, ev<{ replaced: number }>(done).replaced], [true, 2])
  assert.equal(p.lines.filter((l) => l.msg === 'old worker still alive after 1500ms: SIGKILL').length, 2)
  const exits = p.lines.filter(event('worker-exit')).map((l) => ev<{ pid: number, signal: string | null, reason: string }>(l))
  assert.deepEqual(exits.filter((e) => oldPids.includes(e.pid)).map((e) => [e.signal, e.reason]), [['SIGKILL', 'requested'], ['SIGKILL', 'requested']])
  for (const pid of oldPids) assert.equal(isAlive(pid), false)
  assert.equal(p.lines.filter(event('restart')).length, 0, 'a SIGKILLed old worker is not replaced again')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('a crash loop in one slot stops the other workers gracefully (their close hooks run, exit 0), then the primary exits 1; restart and crash-loop payloads', async (t) => {
  const { p, port } = await start(t, {
    FIXTURE_THROW_SLOT: '1',
    FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 20, maxDelay: 100 }, crashLoop: { maxFailures: 3, window: 60000 } })
  }, 2, 'slot-cannot-restart-app.mjs')
  const survivor = p.lines.find((l) => primaryReady(l) && l.workerId === 0)?.workerPid as number
  // Slot 1's first generation serves; kill it: every replacement fails to start.
  const victim = p.lines.find((l) => primaryReady(l) && l.workerId === 1)?.workerPid as number
  process.kill(victim, 'SIGKILL')
  assert.equal((await p.waitForExit(90_000)).code, 1)
  const restarts = p.lines.filter(event('restart')).map((l) => ev<{ workerId: number, attempt: number, delay: number, reason: string }>(l))
  assert.deepEqual(restarts.map((r) => [r.workerId, r.attempt, r.reason]), [[1, 1, 'signal'], [1, 2, 'start-failed']])
  assert.deepEqual(restarts.map((r) => r.delay), [20, 40])
  const loops = p.lines.filter(event('crash-loop')).map((l) => ev(l))
  assert.deepEqual(loops, [{ workerId: 1, failures: 3, windowMs: 60000, lastCode: 1, lastSignal: null }])
  assert.deepEqual(p.lines.filter(event('shutdown')).map((l) => ev<{ reason: string }>(l).reason), ['crash-loop'])
  const survivorExit = p.lines.filter(event('worker-exit')).map((l) => ev<{ pid: number, code: number, reason: string }>(l)).find((e) => e.pid === survivor)
  assert.deepEqual([survivorExit?.code, survivorExit?.reason], [0, 'requested'], 'the healthy worker drained and exited 0')
  assert.ok(p.lines.some((l) => l.fixture === 'onClose' && l.pid === survivor), 'its onClose hooks ran')
  assert.equal(isAlive(survivor), false)
  await assert.rejects(get(port, '/', { timeout: 2000 }), 'nobody holds the port')
})

test('SIGTERM to one worker: it finishes its in-flight request, exits 0, and is replaced in its slot', async (t) => {
  const { p, port } = await start(t, { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 50 } }) })
  const held = get(port, '/hold')
  const entered = await p.waitForLine((l) => l.msg === 'incoming request' && (l.req as { url?: string } | undefined)?.url === '/hold', 60_000, 'the held request')
  const victim = entered.pid as number
  const slot = entered.workerId as number
  process.kill(victim, 'SIGTERM')
  await p.waitForLine((l) => l.pid === victim && l.msg === 'closing: draining in-flight requests', 30_000, 'the worker to start draining')
  process.kill(victim, 'SIGUSR2') // release the held handler only now: it is in flight during the drain
  const res = await held
  assert.equal(res.status, 200)
  assert.equal(res.headers.connection, 'close')
  const exit = await p.waitForLine((l) => event('worker-exit')(l) && ev<{ pid: number }>(l).pid === victim, 30_000, 'its exit')
  assert.equal(ev<{ code: number }>(exit).code, 0)
  assert.equal(ev<{ signal: string | null }>(exit).signal, null)
  await waitFor(() => p.lines.some((l) => primaryReady(l) && l.workerId === slot && l.generation === 1), 'its replacement ready', 90_000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('a worker\'s own handle.close() drains it and exits 0; the primary replaces it', async (t) => {
  const { p } = await start(t, { FIXTURE_WORKER_CLOSE: '1', FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 50 } }) }, 0, 'worker-close-app.mjs')
  const exit = await p.waitForLine((l) => event('worker-exit')(l) && ev<{ workerId: number }>(l).workerId === 1, 90_000, 'slot 1 to exit')
  assert.equal(ev<{ code: number }>(exit).code, 0)
  await waitFor(() => p.lines.some((l) => primaryReady(l) && l.workerId === 1 && l.generation === 1), 'slot 1 replaced', 90_000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('app messages on the IPC channel never collide with nclust\'s (untagged "shutdown", "ready", "fatal")', async (t) => {
  const { p, port } = await start(t, {}, 2, 'ipc-app.mjs')
  const pids = p.lines.filter(primaryReady).map((l) => l.workerPid as number).sort()
  await waitFor(() => p.lines.filter((l) => l.msg === 'app message in worker').length === 2, 'both workers got the app message')
  await waitFor(() => p.lines.filter((l) => l.msg === 'app message in primary').length === 4, 'the primary got the app replies')
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.deepEqual([...seen].sort(), pids, 'the same two workers still serve: the app\'s "shutdown" was not nclust\'s')
  assert.equal(p.lines.filter((l) => l.msg === 'worker reported a fatal error').length, 0)
  assert.equal(p.lines.filter((l) => l.msg === 'closing: draining in-flight requests').length, 0)
  assert.equal(p.lines.filter(primaryReady).length, 2, 'no extra "ready"')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('handleSignals: false installs no signal handler: the app\'s own SIGTERM handler runs close() and picks the exit code', async (t) => {
  const { p } = await start(t, {}, 2, 'own-signals-app.mjs')
  p.child.kill('SIGTERM')
  const closed = await p.waitForLine((l) => l.msg === 'fixture close resolved', 60_000, 'the app\'s close')
  assert.equal(closed.code, 0)
  assert.equal((await p.waitForExit()).code, 3, 'the app\'s exit code, not nclust\'s')
  assert.equal(p.lines.filter((l) => l.msg === 'SIGTERM received').length, 0, 'nclust did not handle the signal')
})

test('single mode: close() drains and does not exit; a close stuck past shutdownTimeout exits 1 at the deadline', async (t) => {
  const port = await freePort()
  const api = spawnNode(fixturePath('api-app.mjs'), { env: { WORKER_COUNT: '1', PORT: String(port), HOST: '127.0.0.1' } })
  t.after(() => api.cleanup())
  const resolved = await api.waitForLine((l) => l.msg === 'api single close resolved', 60_000, 'single close()')
  assert.equal(resolved.code, null)
  await api.waitForLine((l) => l.msg === 'api still alive after close', 10_000)
  assert.equal((await api.waitForExit()).code, 42)

  const port2 = await freePort()
  const stuck = spawnNode(fixturePath('stuck-close-app.mjs'), { env: { WORKER_COUNT: '1', PORT: String(port2), HOST: '127.0.0.1', FIXTURE_STUCK: 'always', SHUTDOWN_TIMEOUT: '1500' } })
  t.after(() => stuck.cleanup())
  await stuck.waitForLine((l) => l.msg === 'single-process mode ready (no fork)', 60_000)
  const t0 = Date.now()
  stuck.child.kill('SIGTERM')
  assert.equal((await stuck.waitForExit()).code, 1)
  assert.ok(Date.now() - t0 >= 1500 - 5, 'not before the deadline')
  assert.match(stuck.output(), /app\.close\(\) did not finish within 1500ms; exiting/)
})
