import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, rmSync } from 'node:fs'
import { distinct, get, isAlive, waitFor } from '../../../test/helpers/index.ts'
import { primaryReady, startCluster } from './start-cluster.ts'
import { load } from './load.ts'
import { PROBE_TIMEOUT } from '../src/primary/watchdog.ts'

test('a worker that blocks its event loop forever: report with the blocking function, SIGKILL, replaced; the other worker serves throughout', async (t) => {
  const heartbeatTimeout = 3000
  const heartbeatInterval = 250
  const initialDelay = 100
  const { p, port } = await startCluster(t, {
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval }),
    FIXTURE_BACKOFF: JSON.stringify({ initialDelay })
  })
  const bootMs = Math.max(...p.lines.filter(primaryReady).map((l) => Number(l.startMs)))

  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  await waitFor(() => traffic.result.ok > 200, 'load flowing', 30000)

  const blocked = (await get(port, '/block', { timeout: 10000 })).json() as { blocking: number }
  const tBlock = Date.now()
  const victim = p.lines.find((l) => primaryReady(l) && l.workerPid === blocked.blocking)!
  const other = p.lines.find((l) => primaryReady(l) && l.workerPid !== blocked.blocking)!

  const hung = await p.waitForLine((l) => l.workerPid === blocked.blocking && l.silentMs !== undefined && l.frames !== undefined, heartbeatTimeout + PROBE_TIMEOUT + 20000, 'the hung report line')
  const tHung = Date.now()
  const replacement = await p.waitForLine((l) => primaryReady(l) && l.workerId === victim.workerId && l.generation === 1, 60000, 'the replacement')
  const tReplaced = Date.now()
  // Keep-alive clients that lost their connection reconnected to the worker left; fresh connections reach the replacement.
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.deepEqual([...seen].sort(), [other.workerPid, replacement.workerPid].sort(), 'the replacement serves beside the other worker')
  const r = await traffic.stop()

  // Detected after heartbeatTimeout (not before), report taken, killed, replaced within timeout + capture + boot.
  const bound = heartbeatTimeout + 2 * heartbeatInterval + Number(hung.captureMs) + initialDelay + 3 * bootMs + 3000
  t.diagnostic(`hung → replaced in ${tReplaced - tBlock} ms (bound ${bound}; capture ${String(hung.captureMs)} ms, boot ${bootMs} ms); ` +
    `load: ${r.total} requests, ${r.ok} ok, ${r.errors.length} failed (in flight on the hung worker)`)
  assert.ok(Number(hung.silentMs) > heartbeatTimeout, 'not declared hung before the timeout')
  assert.ok(tReplaced - tBlock < bound, `replaced within ${bound} ms (took ${tReplaced - tBlock})`)

  const report = String(hung.report)
  t.after(() => rmSync(report, { force: true }))
  const json = JSON.parse(readFileSync(report, 'utf8')) as { header: { processId: number }, javascriptStack: { stack: string[] } }
  assert.equal(json.header.processId, blocked.blocking, 'the report is the hung process\'s')
  assert.ok(json.javascriptStack.stack.some((f) => f.includes('blockTheLoopForever')), `the report's JS stack names the blocking function: ${JSON.stringify(json.javascriptStack.stack)}`)
  // The pause may land inside a builtin the loop calls (`at Math.random (<anonymous>)`): the blocking function is right under it.
  const top = (hung.frames as string[]).slice(0, 2)
  assert.ok(top.some((f) => /^at (Immediate\.)?blockTheLoopForever.* \(file:.*app\.mjs:\d+:\d+\)$/.test(f)), `the logged top frames name the blocking function: ${JSON.stringify(top)}`)

  const exit = p.lines.find((l) => l.msg === 'worker exited unexpectedly' && l.workerPid === blocked.blocking)!
  assert.equal(exit.reason, 'hung')
  assert.equal(exit.signal, 'SIGKILL')
  assert.ok(p.lines.some((l) => l.workerId === victim.workerId && l.reason === 'hung' && typeof l.msg === 'string' && l.msg.startsWith('restarting worker')))
  assert.equal(isAlive(blocked.blocking), false)

  // The other worker served all along; the only failures are requests that were on the hung worker
  // when it was killed (at most one per client), none before it was detected.
  const duringHang = r.answers.filter((a) => a.at > tBlock && a.at < tHung && a.pid === other.workerPid).length
  assert.ok(duringHang > 50, `the other worker kept answering during the hang (${duringHang})`)
  assert.ok(r.errors.length <= 50, `failures bounded by the clients on the hung worker (${r.errors.length})`)
  for (const e of r.errors) assert.ok(e.at >= tHung - 1000, `no failure before the hung worker was killed: ${e.error}`)
  assert.equal(r.total, r.ok + r.errors.length, 'every request is counted once')
  assert.deepEqual([...r.statuses.keys()], [200])

  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})
