import { test } from 'node:test'
import assert from 'node:assert/strict'
import { get, isAlive, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'
import { isEvent, primaryReady, startCluster, unexpectedExit } from './start-cluster.ts'
import { load, type LoadResult } from './load.ts'

const starts = isEvent('recycle')
const forkedEvent = (l: LogLine): boolean => isEvent('state')(l) && l.from === null
const dones = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('recycle done')

/** Recycles never overlap: every `recycle start` is followed by its `recycle done` before the next start. */
function assertOneAtATime (p: Spawned): void {
  const seq = p.lines.filter((l) => starts(l) || dones(l)).map((l) => `${starts(l) ? 'start' : 'done'}:${String(l.workerId)}`)
  for (let i = 0; i < seq.length; i++) {
    const [kind, slot] = seq[i]!.split(':')
    if (kind === 'start') assert.ok(i + 1 >= seq.length || seq[i + 1] === `done:${slot!}`, `one recycle at a time: ${seq.join(' ')}`)
  }
}

function assertNothingLost (r: LoadResult): void {
  assert.deepEqual(r.errors, [], 'no request failed (no reset, no socket hang up, no 5xx)')
  assert.deepEqual([...r.statuses.keys()], [200])
  assert.equal(r.total, r.ok)
}

test('maxRequests (+ jitter) recycles every slot, one at a time, surge-first, with 0 failed requests under 50 keep-alive clients', async (t) => {
  const { p, port } = await startCluster(t, { MAX_REQUESTS: '400', FIXTURE_OPTIONS: JSON.stringify({ maxRequestsJitter: 50, heartbeatInterval: 250 }) })
  const firstPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  await waitFor(() => new Set(p.lines.filter(dones).map((l) => l.workerId)).size === 2, 'both slots recycled', 90000)
  const r = await traffic.stop()
  t.diagnostic(`${r.total} requests, ${r.errors.length} failed; recycles: ${p.lines.filter(dones).length}`)

  assertNothingLost(r)
  assertOneAtATime(p)
  for (const l of p.lines.filter(starts)) {
    assert.equal(l.why, 'maxRequests')
    assert.ok(Number(l.value) >= 400 && Number(l.limit) >= 400 && Number(l.limit) <= 450, `limit ${String(l.limit)} within 400..450`)
  }
  for (const pid of firstPids) {
    const exit = await p.waitForLine((l) => isEvent('worker-exit')(l) && l.workerPid === pid, 30000, `exit of ${pid}`)
    assert.equal(exit.reason, 'recycle')
    await waitFor(() => !isAlive(pid), `first-generation worker ${pid} gone`)
  }
  assert.equal(p.lines.filter((l) => unexpectedExit(l)).length, 0)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('maxRss recycles a worker that allocates past it, with 0 failed requests', async (t) => {
  const { p, port } = await startCluster(t, { MAX_RSS: '200', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250 }) })
  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  const readyAt = Date.now()
  // Past the "right after start" window (3 samples, at least 3 s), where an RSS over the limit means a hold, not a recycle.
  await waitFor(() => traffic.result.ok > 200 && Date.now() - readyAt > 3500, 'load flowing, workers past their first samples', 30000)
  const before = (await get(port, '/alloc?mb=0')).json() as { rss: number }
  assert.ok(before.rss < 150 * 1024 * 1024, `baseline RSS well under maxRss (${before.rss})`)
  const grown = (await get(port, '/alloc?mb=150')).json() as { pid: number, rss: number }
  assert.ok(grown.rss > 200 * 1024 * 1024, `the worker is now over maxRss (${grown.rss})`)
  const done = await p.waitForLine((l) => dones(l) && l.workerPid === grown.pid, 60000, 'the recycle of the grown worker')
  await waitFor(() => !isAlive(grown.pid), 'the grown worker gone')
  const r = await traffic.stop()
  t.diagnostic(`${r.total} requests, ${r.errors.length} failed; recycled at ${String(done.value)} MB in ${String(done.ms)} ms`)

  assertNothingLost(r)
  const start = p.lines.find((l) => starts(l) && l.workerPid === grown.pid)!
  assert.equal(start.why, 'maxRss')
  assert.equal(start.limit, 200)
  assert.ok(Number(start.value) > 200)
  assert.equal(p.lines.filter(starts).length, 1, 'only the worker that grew is recycled')
  assert.equal(p.lines.filter((l) => l.holdMs !== undefined).length, 0, 'no hold')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('workers over maxRss right after they start are not recycled in a loop: logged once each, held', async (t) => {
  // 20 MB is below any Node process: every worker is over it at its first sample.
  const { p } = await startCluster(t, { MAX_RSS: '20', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250 }) })
  await waitFor(() => new Set(p.lines.filter((l) => l.holdMs !== undefined).map((l) => l.workerId)).size === 2, 'both slots on hold', 30000)
  const holds = p.lines.filter((l) => l.holdMs !== undefined)
  assert.deepEqual(holds.map((l) => l.holdMs), [30000, 30000])
  for (const l of holds) assert.match(String(l.msg), /^worker \d is over maxRss \(\d+ MB > 20 MB\) right after it started: not recycling it in a loop; next try in 30000ms$/)
  // Eight more samples per worker (250 ms apart) change nothing: no recycle, no new fork, no second line.
  const forked = p.lines.filter(forkedEvent).length
  const t0 = Date.now()
  await waitFor(() => Date.now() - t0 > 2000 && p.lines.filter(forkedEvent).length === forked, '2 s (8 samples) without a fork', 10000)
  assert.equal(p.lines.filter(starts).length, 0)
  assert.equal(p.lines.filter(forkedEvent).length, 0, 'no fork after the first two (forked before the fixture listens for events): nothing recycled')
  assert.equal(p.lines.filter((l) => l.holdMs !== undefined).length, 2)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('SIGTERM during a recycle: the candidate and the old worker stop cleanly, exit 0', async (t) => {
  const { p, port } = await startCluster(t, { MAX_REQUESTS: '200', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250 }) })
  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  await p.waitForLine(starts, 60000, 'a recycle start')
  const tTerm = Date.now()
  p.child.kill('SIGTERM')
  const { code } = await p.waitForExit(30000)
  const r = await traffic.stop()
  assert.equal(code, 0)
  assert.equal(p.lines.filter((l) => unexpectedExit(l)).length, 0)
  assert.ok(p.lines.some(isEvent('closed')), 'the cluster stopped')
  // Requests before the shutdown all succeeded; after it, connections are refused (nobody listens any more).
  assert.deepEqual(r.errors.filter((e) => e.at < tTerm), [])
  for (const pid of p.knownPids()) await waitFor(() => !isAlive(pid), `pid ${pid} gone`)
})
