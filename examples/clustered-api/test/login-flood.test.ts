// A flood of logins against the built server with 2 workers, each allowed 1 running scrypt hash and 2
// waiting: the excess is answered 503 + Retry-After at once (counted in the cluster scrape), and
// /health and / stay fast while the accepted hashes run.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { clusterEnv, deleteKeys, dropSchema, isolation } from './helpers.js'
import { freePort } from '../../../test/helpers/index.ts'
import { Server, request, type Response } from './cluster-harness.js'

const { schema, prefix } = isolation('flood')
let server: Server
let port = 0
let metricsPort = 0

before(async () => {
  port = await freePort()
  metricsPort = await freePort()
  server = new Server(port, clusterEnv({ schema, prefix }, {
    METRICS_PORT: String(metricsPort),
    HASH_CONCURRENCY: '1',
    HASH_QUEUE: '2',
    RATE_LIMIT_MAX: '100000', // the probes below are many
    LOGIN_FAILURES_PER_USER: '1000' // 30 logins of one user at once: the hash queue is under test, not the login limit
  }))
  await server.start()
})

after(async () => {
  await server?.stop()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN

test('30 logins at once: the excess gets 503 + Retry-After at once, /health and / stay fast', async (t) => {
  const creds = { username: 'flood', password: 'correct horse battery' }
  assert.equal((await request(port, 'POST', '/users', { body: creds })).status, 201)

  const logins: Array<Response<{ code?: string }> & { ms: number }> = []
  const state = { flooding: true }
  const flood = Promise.all(Array.from({ length: 30 }, async () => {
    const t0 = performance.now()
    const r = await request<{ code?: string }>(port, 'POST', '/login', { body: creds })
    logins.push({ ...r, ms: performance.now() - t0 })
  })).finally(() => { state.flooding = false })

  const probes: Array<{ path: string, status: number, ms: number }> = []
  while (state.flooding) {
    for (const path of ['/health', '/']) {
      const t0 = performance.now()
      const r = await request(port, 'GET', path)
      probes.push({ path, status: r.status, ms: performance.now() - t0 })
    }
    await sleep(20) // pace the probes: they measure, they are not part of the load
  }
  await flood

  const ok = logins.filter((r) => r.status === 200)
  const busy = logins.filter((r) => r.status === 503)
  assert.equal(ok.length + busy.length, 30, `only 200 or 503: ${JSON.stringify(logins.map((r) => r.status))}`)
  assert.ok(busy.length >= 1, 'the queue overflowed')
  assert.ok(ok.length >= 2, 'each worker served its running and queued logins')
  for (const r of busy) {
    assert.equal(r.headers['retry-after'], '1')
    assert.equal(r.body.code, 'HASHING_BUSY')
  }
  // A refusal costs no hash: it comes back before the typical accepted login.
  assert.ok(median(busy.map((r) => r.ms)) < median(ok.map((r) => r.ms)), `503 median ${median(busy.map((r) => r.ms))} ms, 200 median ${median(ok.map((r) => r.ms))} ms`)

  assert.ok(probes.length >= 4, `probed ${probes.length} times during the flood`)
  assert.deepEqual(probes.filter((p) => p.status !== 200), [], 'every probe answered 200')
  const slowest = Math.max(...probes.map((p) => p.ms))
  assert.ok(slowest < 1000, `slowest probe during the flood: ${Math.round(slowest)} ms (${probes.length} probes)`)

  t.diagnostic(`logins: ${ok.length} x 200 (median ${Math.round(median(ok.map((r) => r.ms)))} ms), ${busy.length} x 503 (median ${Math.round(median(busy.map((r) => r.ms)))} ms); ` +
    `${probes.length} probes, median ${Math.round(median(probes.map((p) => p.ms)))} ms, slowest ${Math.round(slowest)} ms`)
  // Every refusal was counted by the worker that made it, and reaches the cluster scrape.
  const scrape = await request<string>(metricsPort, 'GET', '/metrics')
  const counted = [...scrape.body.matchAll(/^password_hash_rejected_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
  assert.equal(counted, busy.length)
  assert.match(scrape.body, /^password_hash_active\{/m)
})
