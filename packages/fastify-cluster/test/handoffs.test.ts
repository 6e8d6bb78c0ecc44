// kill -9 while connections arrive: a connection the primary handed to the worker in the instant it
// died is never left open and unanswered; one the worker never took goes to another worker unread
// (balance primary), or is reset at once (sticky) (src/primary/handoffs.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { get, isAlive, waitFor } from '../../../test/helpers/index.ts'
import { primaryReady, startCluster } from './start-cluster.ts'

const LANES = 8
const KILLS = 20
/** A request answered or reset takes milliseconds; one with neither after this long was left hanging. */
const HUNG_AFTER_MS = 10000

for (const balance of ['primary', 'sticky'] as const) {
  test(`balance ${balance}: connections handed to a worker as it is kill -9'd are reset, not left hanging until the primary exits`, async (t) => {
    const { p, port } = await startCluster(t, {
      NCLUST_BALANCE: balance,
      FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 10, maxDelay: 100 }, crashLoop: { maxFailures: 1000, window: 60000 } })
    }, 2)
    const tally = { sent: 0, ok: 0, reset: 0, hung: 0 }
    const client = { stop: false }
    // Fresh connections (agent: false), one request at a time per lane: each is a new hand-off.
    const lane = async (): Promise<void> => {
      while (!client.stop) {
        tally.sent++
        await new Promise<void>((resolve) => {
          const req = http.request({ host: '127.0.0.1', port, path: '/', agent: false, timeout: HUNG_AFTER_MS }, (res) => {
            res.resume()
            res.on('end', () => { tally.ok++; resolve() })
            res.on('error', () => { tally.reset++; resolve() })
          })
          req.on('timeout', () => { tally.hung++; req.destroy(new Error('hung')) })
          req.on('error', (err) => { if (err.message !== 'hung') tally.reset++; resolve() })
          req.end()
        })
      }
    }
    const lanes = Array.from({ length: LANES }, lane)
    await waitFor(() => tally.ok >= 50, '50 answers', 30000)
    const workerPids = (): number[] => [...new Set(p.lines.filter(primaryReady).map((l) => Number(l.workerPid)))].filter(isAlive)
    for (let i = 0; i < KILLS; i++) {
      const pids = workerPids()
      const victim = pids[i % Math.max(1, pids.length)]
      if (victim !== undefined) process.kill(victim, 'SIGKILL')
      await sleep(300)
    }
    await waitFor(() => workerPids().length >= 2, '2 workers serving after the kills', 60000)
    const okBefore = tally.ok
    await waitFor(() => tally.ok >= okBefore + 50, '50 more answers after the kills', 30000)
    client.stop = true
    await Promise.all(lanes) // each request ends: answered, reset, or after HUNG_AFTER_MS
    t.diagnostic(`kill -9 x${KILLS} under ${LANES} fresh-connection clients: ${JSON.stringify(tally)}`)
    assert.ok(tally.reset > 0, 'the kills did cut connections (the test exercised the race)')
    assert.equal(tally.hung, 0, 'no connection was left open without an answer')
  })
}

test('balance primary: connections handed to a worker that dies before taking them are served by another, unread', async (t) => {
  // A worker whose loop is blocked acknowledges no hand-over: every connection the primary hands it
  // waits in the primary (child_process's pending handle and queue). Its kill -9 must not reset them.
  const { p, port } = await startCluster(t, { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 10, maxDelay: 100 } }) }, 2)
  const pids = [...new Set(p.lines.filter(primaryReady).map((l) => Number(l.workerPid)))]
  const victim = pids[0] as number
  let blocked = false
  for (let i = 0; i < 10 && !blocked; i++) { // round robin: one of the next two connections reaches it
    const r = await get(port, `/block?pid=${victim}`)
    blocked = r.json().blocking === victim
  }
  assert.ok(blocked, `worker ${victim} blocks its loop`)
  const CONNECTIONS = 12
  const answers = Array.from({ length: CONNECTIONS }, async () => await get(port, '/', { timeout: 30000 }).then((r) => r.json().pid as number, (err: Error) => `failed: ${err.message}`))
  await sleep(500) // the connections reached the primary, half of them are handed to the blocked worker
  process.kill(victim, 'SIGKILL')
  const got = await Promise.all(answers)
  t.diagnostic(`${CONNECTIONS} fresh connections, half handed to a blocked worker that was then killed: ${JSON.stringify(got)}`)
  assert.deepEqual(got.filter((g) => typeof g === 'string'), [], 'no connection reset')
  assert.ok(got.every((g) => g !== victim), 'none by the killed worker')
})
