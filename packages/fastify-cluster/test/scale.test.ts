import { test } from 'node:test'
import assert from 'node:assert/strict'
import { distinct, isAlive, waitFor, type LogLine } from '../../../test/helpers/index.ts'
import { isEvent, primaryReady, startCluster, unexpectedExit } from './start-cluster.ts'
import { load } from './load.ts'
const scaleDone = (l: LogLine): boolean => isEvent('scale')(l) && l.phase === 'done'

interface Info { workerId: number, pid: number, state: string, generation: number }

test('handle.scale: 2 → 4 → 1 → 2 under 50 keep-alive clients, 0 failed, the right pids at each step', async (t) => {
  const { p, port } = await startCluster(t, { FIXTURE_SCALE_STEPS: '4,1,2' }, 2, { app: 'scale-app.mjs' })
  const initial = p.lines.filter(primaryReady).sort((a, b) => Number(a.workerId) - Number(b.workerId)).map((l) => l.workerPid as number)
  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  await waitFor(() => traffic.result.ok > 200, 'load flowing', 30000)
  const step = async (n: number): Promise<{ result: { ok: boolean, from: number, to: number, size: number, ms: number }, size: number, workers: Info[] }> => {
    const seen = p.lines.filter((l) => l.msg === 'fixture scaled').length
    p.child.kill('SIGUSR2')
    const line = await waitFor(() => p.lines.filter((l) => l.msg === 'fixture scaled')[seen], `scale to ${n}`, 60000)
    return line as unknown as { result: { ok: boolean, from: number, to: number, size: number, ms: number }, size: number, workers: Info[] }
  }

  const four = await step(4)
  assert.deepEqual({ ...four.result, ms: 0 }, { ok: true, from: 2, to: 4, size: 4, ms: 0 })
  assert.equal(four.size, 4)
  assert.deepEqual(four.workers.map((w) => [w.workerId, w.state]), [[0, 'ready'], [1, 'ready'], [2, 'ready'], [3, 'ready']])
  assert.deepEqual(four.workers.slice(0, 2).map((w) => w.pid), initial, 'slots 0 and 1 keep their workers')
  const added = four.workers.slice(2).map((w) => w.pid)
  assert.equal(new Set([...initial, ...added]).size, 4)
  const seen4 = await distinct(port, '/', (b: { pid: number }) => b.pid, 4)
  assert.deepEqual([...seen4].sort(), four.workers.map((w) => w.pid).sort(), 'fresh connections reach all four')

  const one = await step(1)
  assert.deepEqual({ ...one.result, ms: 0 }, { ok: true, from: 4, to: 1, size: 1, ms: 0 })
  assert.deepEqual(one.workers.map((w) => [w.workerId, w.pid, w.state]), [[0, initial[0], 'ready']], 'only slot 0, its first worker')
  for (const pid of [initial[1]!, ...added]) {
    assert.equal(isAlive(pid), false, `pid ${pid} drained and gone`)
    assert.equal(p.lines.find((l) => isEvent('worker-exit')(l) && l.workerPid === pid)?.reason, 'requested')
  }

  const two = await step(2)
  assert.deepEqual({ ...two.result, ms: 0 }, { ok: true, from: 1, to: 2, size: 2, ms: 0 })
  assert.equal(two.workers.length, 2)
  assert.deepEqual(two.workers.map((w) => w.workerId), [0, 1])
  assert.equal(two.workers[0]!.pid, initial[0])
  assert.ok(![...initial, ...added].includes(two.workers[1]!.pid), 'slot 1 is a new process')

  // Keep the load a moment on the final shape, counted like the rest.
  const okNow = traffic.result.ok
  await waitFor(() => traffic.result.ok > okNow + 100, 'load after the last step', 30000)
  const r = await traffic.stop()
  t.diagnostic(`${r.total} requests, ${r.errors.length} failed; scale ms: ${four.result.ms}, ${one.result.ms}, ${two.result.ms}`)
  const marks = p.lines.filter((l) => typeof l.msg === 'string' && /^(scaling from|scaled to)/.test(l.msg)).map((l) => `${String(l.msg)} @${String(l.time)}`)
  if (r.errors.length > 0) t.diagnostic(`failures: ${JSON.stringify(r.errors)}; steps: ${marks.join(', ')}`)
  assert.deepEqual(r.errors, [], 'no request failed')
  assert.deepEqual([...r.statuses.keys()], [200])
  assert.equal(r.total, r.ok)
  assert.equal(p.lines.filter((l) => unexpectedExit(l)).length, 0)
  assert.deepEqual(p.lines.filter(scaleDone).map((l) => l.size), [4, 1, 2])
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('SIGTTIN / SIGTTOU add and remove one worker, never below 1', async (t) => {
  const { p } = await startCluster(t)
  const scaled = (): number[] => p.lines.filter(scaleDone).map((l) => Number(l.size))
  p.child.kill('SIGTTIN')
  await waitFor(() => scaled().length === 1, 'scaled up', 60000)
  assert.deepEqual(scaled(), [3])
  for (const expected of [[3, 2], [3, 2, 1]]) {
    p.child.kill('SIGTTOU')
    await waitFor(() => scaled().length === expected.length, `scaled to ${String(expected.at(-1))}`, 60000)
    assert.deepEqual(scaled(), expected)
  }
  p.child.kill('SIGTTOU')
  await p.waitForLine((l) => l.msg === 'SIGTTOU: already at 1 worker, never fewer', 10000)
  assert.deepEqual(scaled(), [3, 2, 1])
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('SIGTERM during a scale up: the new workers and the old ones stop cleanly, exit 0', async (t) => {
  const { p } = await startCluster(t, { FIXTURE_SCALE_STEPS: '4' }, 2, { app: 'scale-app.mjs' })
  p.child.kill('SIGUSR2')
  await p.waitForLine((l) => isEvent('scale')(l) && l.phase === 'start' && l.from === 2 && l.to === 4, 20000)
  await p.waitForLine((l) => isEvent('state')(l) && l.from === null && l.workerId === 3, 20000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
  assert.equal(p.lines.filter((l) => unexpectedExit(l)).length, 0)
  const scaled = p.lines.find((l) => l.msg === 'fixture scaled') as { result?: { ok: boolean } } | undefined
  if (scaled !== undefined) assert.equal(scaled.result?.ok, false, 'the interrupted scale does not report success')
  for (const pid of p.knownPids()) await waitFor(() => !isAlive(pid), `pid ${pid} gone`)
})
