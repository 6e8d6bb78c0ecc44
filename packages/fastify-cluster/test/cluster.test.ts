import { test } from 'node:test'
import assert from 'node:assert/strict'
import { freePort, get, distinct, isAlive, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { fixturePath, isEvent, primaryReady, startCluster, unexpectedExit as unexpected } from './start-cluster.ts'

/** Release the /hold handlers of these processes once each has started draining: they are in flight during the drain. */
async function releaseWhenDraining (p: Spawned, pids: number[]): Promise<void> {
  await waitFor(() => pids.every((pid) => p.lines.some((l) => l.pid === pid && l.msg === 'closing: draining in-flight requests')), 'every worker draining')
  for (const pid of pids) process.kill(pid, 'SIGUSR2')
}

test('two workers answer from two different pids, in slots 0 and 1, and the primary never listens', async (t) => {
  const { p, port } = await startCluster(t)
  const seen = await distinct(port, '/', (b: { pid: number, workerId: number }) => `${b.workerId}:${b.pid}`, 2)
  assert.equal(seen.size, 2)
  const [a, b] = [...seen].map((s) => s.split(':').map(Number)) as [[number, number], [number, number]]
  assert.deepEqual([a[0], b[0]].sort(), [0, 1])
  assert.notEqual(a[1], b[1])
  assert.ok(a[1] !== p.pid && b[1] !== p.pid, 'workers, not the primary, serve requests')
  // every supervisor line carries role, workerId and pid
  const supervisorLines = p.lines.filter((l) => l.role === 'primary')
  assert.ok(supervisorLines.length > 0)
  for (const l of supervisorLines) {
    assert.equal(l.pid, p.pid)
    assert.ok('workerId' in l, `workerId on: ${l.msg ?? ''}`)
  }
  // a worker's app logger carries its workerId as a binding
  assert.ok(p.lines.some((l) => l.role === 'worker' && l.workerId === 1 && l.msg === 'worker ready'))
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('kill -9 of a worker: replaced in the same slot, and the port keeps answering', async (t) => {
  const { p, port } = await startCluster(t, { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 200 } }) })
  const first = await get(port, '/')
  const victim = first.json() as { pid: number, workerId: number }
  process.kill(victim.pid, 'SIGKILL')
  // While the slot is empty, the other worker serves.
  const during = await get(port, '/')
  assert.equal(during.status, 200)
  assert.notEqual((during.json() as { pid: number }).pid, victim.pid)
  const exit = await p.waitForLine(unexpected, 15000, 'the exit')
  assert.equal(exit.workerId, victim.workerId)
  assert.equal(exit.signal, 'SIGKILL')
  assert.equal(exit.reason, 'signal')
  await waitFor(() => p.lines.filter(primaryReady).length >= 3, 'replacement ready')
  const replacement = p.lines.filter(primaryReady)[2]!
  assert.equal(replacement.workerId, victim.workerId, 'same slot')
  assert.equal(replacement.generation, 1)
  assert.notEqual(replacement.workerPid, victim.pid)
  const seen = await distinct(port, '/', (b: { workerId: number, pid: number }) => `${b.workerId}:${b.pid}`, 2)
  assert.ok([...seen].includes(`${victim.workerId}:${replacement.workerPid as number}`), 'the replacement serves')
  assert.equal(isAlive(victim.pid), false)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('SIGTERM with requests in flight: they complete with 200, onClose hooks run, the primary exits 0', async (t) => {
  const { p, port } = await startCluster(t)
  const workerPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const inflight = Array.from({ length: 6 }, () => get(port, '/hold'))
  await waitFor(() => p.lines.filter((l) => l.msg === 'incoming request' && l.req !== undefined).length >= 6, '6 requests in flight')
  p.child.kill('SIGTERM')
  await releaseWhenDraining(p, workerPids)
  const results = await Promise.all(inflight)
  assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200, 200])
  const { code } = await p.waitForExit(20000)
  assert.equal(code, 0)
  assert.equal(p.lines.filter((l) => l.fixture === 'onClose').length, 2, 'both workers ran their onClose hooks')
  assert.equal(p.lines.filter(unexpected).length, 0)
  assert.match(p.output(), /cluster stopped: every worker exited/)
})

test('a worker stuck in its close past shutdownTimeout is SIGKILLed and the primary exits 1 saying which', async (t) => {
  const shutdownTimeout = 1500
  const { p } = await startCluster(t, { FIXTURE_STUCK: 'always', SHUTDOWN_TIMEOUT: String(shutdownTimeout) }, 2, { app: 'stuck-close-app.mjs' })
  const t0 = Date.now()
  p.child.kill('SIGTERM')
  const { code } = await p.waitForExit(60_000)
  assert.equal(code, 1)
  assert.ok(Date.now() - t0 >= shutdownTimeout - 5, 'not before the deadline')
  assert.match(p.output(), /still alive after 1500ms: SIGKILL/)
  assert.match(p.output(), /SIGKILLed: worker \d \(pid \d+\)/)
  for (const pid of p.knownPids()) assert.equal(isAlive(pid), false, `pid ${pid} is gone`)
})

test('a second signal during shutdown forces it at once', async (t) => {
  const shutdownTimeout = 60_000
  const { p } = await startCluster(t, { FIXTURE_STUCK: 'always', SHUTDOWN_TIMEOUT: String(shutdownTimeout) }, 2, { app: 'stuck-close-app.mjs' })
  p.child.kill('SIGTERM')
  await p.waitForLine(isEvent('shutdown'))
  await p.waitForLine((l) => l.fixture === 'onClose', 10000, 'workers closing')
  const t0 = Date.now()
  p.child.kill('SIGINT')
  const { code } = await p.waitForExit(shutdownTimeout)
  assert.equal(code, 1)
  assert.ok(Date.now() - t0 < shutdownTimeout, 'at once, not at the deadline')
  assert.match(p.output(), /second signal during shutdown: killing every worker now/)
})

test('workers that crash soon after being ready trip the crash-loop guard: exit 1, bounded time, reason logged', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixturePath('crashes-after-ready-app.mjs'), {
    env: {
      WORKER_COUNT: '2',
      PORT: String(port),
      HOST: '127.0.0.1',
      FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 20, maxDelay: 100 }, crashLoop: { maxFailures: 4, window: 60000 } })
    }
  })
  t.after(() => p.cleanup())
  const t0 = Date.now()
  const { code } = await p.waitForExit(90_000)
  assert.equal(code, 1)
  assert.ok(Date.now() - t0 < 60_000, 'tripped inside the crash-loop window (4 failures within 60000 ms)')
  const trip = p.lines.find(isEvent('crash-loop'))
  assert.ok(trip, 'the crash-loop event')
  assert.equal(trip.failures, 4)
  assert.equal(trip.lastCode, 1)
  // The log line names the cause for whoever reads the logs.
  assert.match(p.output(), /failed 4 times within 60000ms \(last exit: code 1, crash: crash after ready \(fixture\)/)
  assert.ok(p.lines.filter(isEvent('restart')).length >= 3, 'restarted with backoff before giving up')
  assert.equal(p.lines.filter(isEvent('start-failed')).length, 0, 'not a start verdict: the slots had been ready')
})

test('an uncaught exception or unhandled rejection: logged with its stack, worker exits 1, replaced in its slot', async (t) => {
  const { p, port } = await startCluster(t, { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 50 } }) })
  for (const [path, n] of [['/crash', 1], ['/reject', 2]] as const) {
    const r = await get(port, path)
    assert.equal(r.status, 200)
    const pid = r.json() as { crashing?: number, rejecting?: number }
    const victim = pid.crashing ?? pid.rejecting
    const exit = await p.waitForLine((l) => unexpected(l) && l.workerPid === victim, 60_000, `exit of ${String(victim)}`)
    assert.equal(exit.code, 1)
    assert.equal(exit.reason, 'crash')
    assert.match(String(exit.error), /boom \(fixture (uncaught exception|unhandled rejection)\)/)
    const fatal = p.lines.find((l) => l.role === 'worker' && l.pid === victim && l.level === 60)
    assert.ok(fatal !== undefined && typeof (fatal.err as { stack?: string }).stack === 'string', 'fatal line with a stack')
    await waitFor(() => p.lines.filter(primaryReady).length >= 2 + n, 'replacement ready')
    assert.equal(p.lines.filter(primaryReady)[1 + n]!.workerId, exit.workerId)
  }
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.equal(seen.size, 2)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('a worker not ready within startTimeout is killed, counted as a failed start, and replaced', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixturePath('hangs-at-start-app.mjs'), {
    env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', FIXTURE_OPTIONS: JSON.stringify({ startTimeout: 5000, restartBackoff: { initialDelay: 50 } }) }
  })
  t.after(() => p.cleanup())
  // Only slot 0's first generation hangs in buildApp (a loaded machine may time out slot 1 too: also fine).
  const exit = await p.waitForLine((l) => l.workerId === 0 && l.try === 1, 60_000, 'the start timeout')
  assert.equal(exit.reason, 'start-timeout')
  assert.equal(exit.signal, 'SIGKILL')
  assert.match(String(exit.msg), /^worker 0 did not start \(try 1 of 3, start-timeout\): not ready within 5000ms; retrying in 50ms$/)
  await waitFor(() => p.lines.some((l) => primaryReady(l) && l.workerId === 0 && l.generation === 1), 'slot 0 generation 1 ready', 90_000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('a SIGKILLed primary leaves no worker behind: each notices the closed channel and exits', async (t) => {
  const { p, port } = await startCluster(t)
  const workerPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  assert.equal(workerPids.length, 2)
  p.child.kill('SIGKILL')
  await waitFor(() => workerPids.every((pid) => !isAlive(pid)), 'every worker to exit', 20000)
  await assert.rejects(get(port, '/', { timeout: 2000 }), 'nobody holds the port')
  assert.ok(p.lines.some((l) => l.msg === 'primary is gone (IPC channel closed): closing'))
})

test('an unhandled rejection in the primary drains the workers (in-flight requests finish) and exits 1', async (t) => {
  const { p, port } = await startCluster(t, {}, 2, { app: 'primary-reject-app.mjs' })
  const workerPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const inflight = get(port, '/hold')
  const entered = await p.waitForLine((l) => l.msg === 'incoming request', 60_000, 'request in flight')
  p.child.kill('SIGUSR2')
  await releaseWhenDraining(p, [entered.pid as number])
  assert.equal((await inflight).status, 200)
  assert.equal((await p.waitForExit(20000)).code, 1)
  const fatal = p.lines.find((l) => l.msg === 'uncaught error in the primary: shutting the cluster down')
  assert.match(String((fatal?.err as { stack?: string } | undefined)?.stack), /primary oops \(fixture\)/)
  for (const pid of workerPids) assert.equal(isAlive(pid), false)
})

test('Ctrl-C (SIGINT to the whole process group) is a clean shutdown: in-flight requests finish, exit 0', async (t) => {
  const { p, port } = await startCluster(t, {}, 2, { detached: true })
  const workerPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const inflight = Array.from({ length: 4 }, () => get(port, '/hold'))
  await waitFor(() => p.lines.filter((l) => l.msg === 'incoming request').length >= 4, 'requests in flight')
  process.kill(-p.pid, 'SIGINT')
  await releaseWhenDraining(p, workerPids)
  const results = await Promise.all(inflight)
  assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200])
  assert.equal((await p.waitForExit(20000)).code, 0)
  assert.equal(p.lines.filter(unexpected).length, 0, 'no worker exit counted as a crash')
  assert.equal(p.lines.filter(isEvent('restart')).length, 0)
})

test('handle: events, workers(), ready(), onClose() and the request/reply channel with per-worker timeouts', async (t) => {
  const { p } = await startCluster(t, {}, 2, { app: 'probe-app.mjs' })
  const results = await p.waitForLine((l) => l.msg === 'probe results', 90_000)
  const ready = p.lines.find((l) => l.msg === 'probe ready')!
  const workers = ready.workers as Array<{ workerId: number, pid: number, state: string, generation: number, startedAt: number, restarts: number }>
  assert.deepEqual(workers.map((w) => [w.workerId, w.state, w.generation, w.restarts]), [[0, 'ready', 0, 0], [1, 'ready', 0, 0]])
  const echo = results.echo as Array<{ ok: boolean, workerId: number, pid: number, value: { pid: number, workerId: number, payload: unknown } }>
  assert.deepEqual(echo.map((e) => [e.ok, e.workerId, e.value.workerId, e.value.payload]), [[true, 0, 0, { n: 42 }], [true, 1, 1, { n: 42 }]])
  assert.deepEqual(echo.map((e) => e.value.pid), workers.map((w) => w.pid))
  const hang = results.hang as Array<{ ok: boolean, error: string, ms: number }>
  assert.equal(hang.length, 2)
  for (const h of hang) {
    assert.equal(h.ok, false)
    assert.match(h.error, /did not answer "hang" within 300ms/)
    assert.ok(h.ms >= 295 && h.ms < 10 * 300, `each worker times out on its own after its 300 ms (took ${h.ms} ms)`)
  }
  assert.match((results.fail as Array<{ error: string }>)[0]!.error, /handler failed \(fixture\)/)
  assert.equal(results.missing, 'NCLUST_CLUSTER_REQUEST_FAILED')
  const dflt = results.defaultTimeout as { code: string, message: string, ms: number }
  assert.equal(dflt.code, 'NCLUST_CLUSTER_REQUEST_TIMEOUT')
  assert.match(dflt.message, /did not answer "hang" within 1000ms/, 'request() without a timeout waits 1000 ms')
  assert.ok(dflt.ms >= 995, `rejected after ${dflt.ms} ms`)
  assert.equal(p.lines.filter(primaryReady).length, 2)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
  assert.ok(p.lines.some(isEvent('shutdown')))
  assert.ok(p.lines.some((l) => l.msg === 'fixture onClose hook (primary)'))
  assert.equal(p.lines.filter((l) => isEvent('worker-exit')(l) && l.reason === 'requested').length, 2)
})

test('single-process mode (WORKER_COUNT=1): serves in-process with no fork, SIGTERM drains and exits 0', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixturePath(), { env: { WORKER_COUNT: '1', PORT: String(port), HOST: '127.0.0.1' } })
  t.after(() => p.cleanup())
  await p.waitForLine((l) => l.msg === 'single-process mode ready (no fork)', 60_000)
  const r = await get(port, '/')
  assert.deepEqual(r.json(), { pid: p.pid, workerId: 0, generation: 0, workers: 1, single: true })
  assert.equal(p.lines.filter((l) => l.msg === 'worker forked').length, 0)
  const inflight = get(port, '/hold')
  await waitFor(() => p.lines.some((l) => l.msg === 'incoming request' && (l.req as { url: string }).url.startsWith('/hold')), 'in flight')
  p.child.kill('SIGTERM')
  await releaseWhenDraining(p, [p.pid])
  assert.equal((await inflight).status, 200)
  assert.equal((await p.waitForExit(20000)).code, 0)
  assert.ok(p.lines.some((l) => l.fixture === 'onClose' && l.role === 'single'))
})
