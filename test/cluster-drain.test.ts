import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { freePort, get, isAlive, spawnNode, waitFor } from './helpers/index.ts'
import { primaryReady } from '../packages/fastify-cluster/test/start-cluster.ts'

const fixture = fileURLToPath(new URL('./fixtures/clustered-app.mjs', import.meta.url))

test('under startClustered, SIGTERM with 20 requests in flight across workers completes all 20', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '20000' } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length === 2, 'two workers ready', 90_000)

  // 20 requests, each on its own connection, so the primary's round-robin spreads them over both workers.
  const workerPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const inflight = Array.from({ length: 20 }, () => get(port, '/hold'))
  await waitFor(() => p.lines.filter((l) => l.msg === 'incoming request').length >= 20, '20 requests in flight')
  p.child.kill('SIGTERM')
  // Release the handlers only once both workers are draining: all 20 are in flight during the drain.
  await waitFor(() => workerPids.every((pid) => p.lines.some((l) => l.pid === pid && l.msg === 'closing: draining in-flight requests')), 'both workers draining')
  for (const pid of workerPids) process.kill(pid, 'SIGUSR2')
  const results = await Promise.all(inflight)

  assert.deepEqual(results.map((r) => r.status), Array(20).fill(200), 'all 20 answered 200')
  assert.equal(new Set(results.map((r) => (r.json() as { pid: number }).pid)).size, 2, 'both workers had requests in flight')
  for (const r of results) {
    assert.equal(r.headers.connection, 'close', 'an in-flight response during the drain says Connection: close')
    assert.equal((r.json() as { draining: boolean }).draining, true, 'the handler finished after draining began')
  }
  const { code } = await p.waitForExit(30000)
  assert.equal(code, 0)
  for (const pid of p.knownPids()) assert.equal(isAlive(pid), false)
  await assert.rejects(get(port, '/', { timeout: 2000 }), 'the port is closed')
})
