// End-to-end on the built server with 2 workers: the cluster-wide rate limit, expired tokens, and
// dependency outages. Redis and Postgres are reached through TCP proxies the test cuts and restores;
// the shared services themselves are never touched.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { clusterEnv, countKeys, DATABASE_URL, deleteKeys, dropSchema, isolation, REDIS_URL, signJwt, TEST_SECRET } from './helpers.js'
import { freePort, waitFor } from '../../../test/helpers/index.ts'
import { Server, request } from './cluster-harness.js'
import { TcpProxy } from './proxy.js'

const RATE_LIMIT_MAX = 12
const { schema, prefix } = isolation('clres')
const redisProxy = TcpProxy.forUrl(REDIS_URL)
const pgProxy = TcpProxy.forUrl(DATABASE_URL)
let server: Server
let port = 0
let pids: number[] = []
// METRICS_PORT is taken on purpose: the API must come up anyway, saying the scrape is not served.
const squatter = net.createServer()

interface Health { status: string, pid: number, checks: { postgres: { ok: boolean }, redis: { ok: boolean } } }

/** Ask /health on fresh connections until both workers answered `status`; returns their pids. */
async function bothWorkersHealth (status: number): Promise<number[]> {
  return await waitFor(async () => {
    const seen = new Map<number, number>()
    for (let i = 0; i < 12 && seen.size < 2; i++) {
      const r = await request<Health>(port, 'GET', '/health')
      seen.set(r.pid, r.status)
    }
    const all = [...seen.values()]
    return seen.size === 2 && all.every((s) => s === status) && [...seen.keys()].sort()
  }, `health ${status} on both workers`, 30000, 200)
}

const forkedCount = (): number => server.logs().filter((l) => l['msg'] === 'worker forked').length

before(async () => {
  await redisProxy.start()
  await pgProxy.start()
  port = await freePort()
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve))
  server = new Server(port, clusterEnv({ schema, prefix }, {
    DATABASE_URL: pgProxy.rewrite(DATABASE_URL),
    REDIS_URL: redisProxy.rewrite(REDIS_URL),
    RATE_LIMIT_MAX: String(RATE_LIMIT_MAX),
    RATE_LIMIT_WINDOW: '60000',
    HEALTH_TIMEOUT: '500',
    METRICS_PORT: String((squatter.address() as net.AddressInfo).port),
    SHUTDOWN_TIMEOUT: '10000'
  }))
  await server.start()
  pids = await bothWorkersHealth(200)
})

after(async () => {
  const code = await server?.stop()
  await redisProxy.close()
  await pgProxy.close()
  await new Promise((resolve) => squatter.close(resolve))
  await dropSchema(schema)
  await deleteKeys(prefix)
  assert.equal(await countKeys(prefix), 0, 'no key left behind')
  assert.equal(code, 0, 'graceful shutdown exits 0')
})

test('a taken METRICS_PORT is logged, and the API serves anyway', async () => {
  await waitFor(async () => server.logs().some((l) => /cluster metrics NOT served/.test(String(l['msg']))), 'the metrics error in the log', 10000, 200)
  assert.equal(pids.length, 2)
})

test(`the rate limit lets exactly ${RATE_LIMIT_MAX} requests through across both workers`, async () => {
  // /health is not limited, so the readiness polling above spent nothing of this window.
  const byStatus = new Map<number, number>()
  const okPids = new Set<number>()
  const remaining: number[] = []
  for (let i = 0; i < RATE_LIMIT_MAX + 8; i++) {
    const r = await request(port, 'GET', '/')
    byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1)
    if (r.status === 200) {
      okPids.add(r.pid)
      remaining.push(Number(r.headers['x-ratelimit-remaining']))
    } else {
      assert.equal(r.status, 429)
      assert.ok(Number(r.headers['retry-after']) > 0)
    }
  }
  assert.equal(byStatus.get(200), RATE_LIMIT_MAX, 'exactly N allowed, not N per worker')
  assert.equal(byStatus.get(429), 8)
  assert.equal(okPids.size, 2, 'both workers served allowed requests')
  assert.deepEqual(remaining, Array.from({ length: RATE_LIMIT_MAX }, (_, i) => RATE_LIMIT_MAX - 1 - i), 'one shared counter')
  // Start the other tests with a fresh window: the counters are ours (REDIS_PREFIX) to delete.
  await deleteKeys(`${prefix}rl:`)
})

test(`a concurrent burst also gets exactly ${RATE_LIMIT_MAX} through`, async () => {
  const results = await Promise.all(Array.from({ length: RATE_LIMIT_MAX + 8 }, async () => await request(port, 'GET', '/')))
  const ok = results.filter((r) => r.status === 200)
  assert.equal(ok.length, RATE_LIMIT_MAX)
  assert.equal(results.filter((r) => r.status === 429).length, 8)
  assert.equal(new Set(results.map((r) => r.pid)).size, 2, 'the burst was spread over both workers')
  await deleteKeys(`${prefix}rl:`)
})

test('an expired token is refused by both workers', async () => {
  const now = Math.floor(Date.now() / 1000)
  const expired = signJwt({ sub: '1', username: 'x', jti: 'old', iat: now - 7200, exp: now - 3600 }, TEST_SECRET)
  const statuses = await server.distinctPids('/whoami', 2, 40, { token: expired })
  assert.equal(statuses.size, 2)
  for (const status of statuses.values()) assert.equal(status, 401)
})

test('redis unreachable: health 503 on both workers, then 200 again with the same pids', async () => {
  const creds = { username: 'outage', password: 'long enough password' }
  assert.equal((await request(port, 'POST', '/users', { body: creds })).status, 201)
  const token = (await request<{ token: string }>(port, 'POST', '/login', { body: creds })).body.token

  await redisProxy.cut()
  const downPids = await bothWorkersHealth(503)
  assert.deepEqual(downPids, pids)
  // Why is in the log only: the public body is the fixed shape, without hosts, ports or error text.
  const down = await request(port, 'GET', '/health')
  assert.deepEqual(down.body, { status: 'degraded', checks: { postgres: { ok: true }, redis: { ok: false } } })
  const detail = server.logs().find((l) => l['msg'] === 'health check failed' && l['dependency'] === 'redis')
  assert.ok(detail !== undefined && typeof detail['err'] === 'string' && detail['err'] !== '', 'the reason is logged')
  const cart = await request<{ message: string, requestId: string }>(port, 'GET', '/cart', { token })
  assert.equal(cart.status, 503)
  assert.equal(cart.body.requestId, cart.headers['x-request-id'])
  const login = await request(port, 'POST', '/login', { body: creds })
  assert.equal(login.status, 200, 'postgres-only routes keep working (rate limiter fails open)')

  await redisProxy.restore()
  assert.deepEqual(await bothWorkersHealth(200), pids, 'same workers: none was restarted')
  const back = await request(port, 'GET', '/cart', { token })
  assert.equal(back.status, 200)
  assert.equal(forkedCount(), 2, 'no worker was forked again')
})

test('postgres unreachable: health 503 and database routes 503, then recovery with the same pids', async () => {
  await pgProxy.cut()
  assert.deepEqual(await bothWorkersHealth(503), pids)
  const login = await request<{ message: string }>(port, 'POST', '/login', { body: { username: 'outage', password: 'long enough password' } })
  assert.equal(login.status, 503)
  assert.match(login.body.message, /postgres is unavailable/)

  await pgProxy.restore()
  assert.deepEqual(await bothWorkersHealth(200), pids, 'same workers: none was restarted')
  const again = await request(port, 'POST', '/login', { body: { username: 'outage', password: 'long enough password' } })
  assert.equal(again.status, 200)
  assert.equal(forkedCount(), 2, 'no worker was forked again')
})
