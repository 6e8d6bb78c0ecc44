// In-process: Redis and Postgres taken away through a TCP proxy and given back. The worker must keep
// running, answer 503 (never hang, never crash) and recover by itself. The shared services are never
// touched: only the proxy is cut. cluster-resilience.test.ts checks the same across 2 real workers.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { migrate } from '../src/db.js'
import { DATABASE_URL, REDIS_URL, deleteKeys, dropSchema, isolation, testConfig } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'
import { TcpProxy } from './proxy.js'

const { schema, prefix } = isolation('resil')
const redisProxy = TcpProxy.forUrl(REDIS_URL)
const pgProxy = TcpProxy.forUrl(DATABASE_URL)
let app: FastifyInstance
let token = ''

interface Health { status: string, checks: { postgres: { ok: boolean, error?: string }, redis: { ok: boolean, error?: string } } }

const health = async (): Promise<{ code: number, body: Health }> => {
  const r = await app.inject({ method: 'GET', url: '/health' })
  return { code: r.statusCode, body: r.json<Health>() }
}
const auth = { authorization: '' }

before(async () => {
  await migrate(DATABASE_URL, schema)
  await redisProxy.start()
  await pgProxy.start()
  const config = testConfig({ schema, prefix }, {
    DATABASE_URL: pgProxy.rewrite(DATABASE_URL),
    REDIS_URL: redisProxy.rewrite(REDIS_URL),
    HEALTH_TIMEOUT: '500'
  })
  app = await buildApp({ workerId: 0, workers: 1 }, config)
  await app.ready()
  const creds = { username: 'resilient', password: 'long enough password' }
  assert.equal((await app.inject({ method: 'POST', url: '/users', payload: creds })).statusCode, 201)
  token = (await app.inject({ method: 'POST', url: '/login', payload: creds })).json<{ token: string }>().token
  auth.authorization = `Bearer ${token}`
})

let closed = false
after(async () => {
  if (!closed) await app?.close()
  await redisProxy.close()
  await pgProxy.close()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

test('redis away: health 503, redis routes 503 with a request id, postgres-only routes still work; then recovery', async () => {
  assert.equal((await health()).code, 200)
  await redisProxy.cut()

  const down = await waitFor(async () => { const h = await health(); return h.code === 503 && h }, 'health 503', 30000, 200)
  assert.equal(down.body.status, 'degraded')
  assert.equal(down.body.checks.redis.ok, false)
  assert.equal(down.body.checks.postgres.ok, true)

  const started = Date.now()
  const cart = await app.inject({ method: 'GET', url: '/cart', headers: auth })
  assert.equal(cart.statusCode, 503, cart.body)
  assert.ok(Date.now() - started < 3000, 'fails fast instead of hanging')
  const body = cart.json<{ message: string, requestId: string }>()
  assert.match(body.message, /redis is unavailable/)
  assert.equal(body.requestId, cart.headers['x-request-id'])
  assert.equal(cart.headers['retry-after'], '1')

  // The rate limiter fails open, so routes that need only Postgres keep working.
  const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'resilient', password: 'long enough password' } })
  assert.equal(login.statusCode, 200)
  assert.equal((await app.inject({ method: 'GET', url: '/' })).statusCode, 200)

  await redisProxy.restore()
  await waitFor(async () => (await health()).code === 200, 'health 200 after redis returns', 30000, 200)
  const back = await app.inject({ method: 'GET', url: '/cart', headers: auth })
  assert.equal(back.statusCode, 200, back.body)
})

test('postgres away: health 503, database routes 503; then recovery', async () => {
  // Open pooled connections first, so cutting them exercises the pool's idle 'error' handler too.
  assert.equal((await app.inject({ method: 'GET', url: '/notes', headers: auth })).statusCode, 200)
  await pgProxy.cut()

  const down = await waitFor(async () => { const h = await health(); return h.code === 503 && h }, 'health 503', 30000, 200)
  assert.equal(down.body.checks.postgres.ok, false)
  assert.equal(down.body.checks.redis.ok, true)

  const notes = await waitFor(async () => {
    const r = await app.inject({ method: 'GET', url: '/notes', headers: auth })
    return r.statusCode === 503 && r
  }, 'notes 503', 30000, 200)
  assert.match(notes.json<{ message: string }>().message, /postgres is unavailable/)
  const login = await app.inject({ method: 'POST', url: '/login', payload: { username: 'resilient', password: 'long enough password' } })
  assert.equal(login.statusCode, 503)

  await pgProxy.restore()
  await waitFor(async () => (await health()).code === 200, 'health 200 after postgres returns', 30000, 200)
  const created = await app.inject({ method: 'POST', url: '/notes', headers: auth, payload: { title: 'after the outage' } })
  assert.equal(created.statusCode, 201, created.body)
})

test('a worker does not start without Redis: a clear error naming REDIS_URL, no hang, no crash', async () => {
  const dead = new TcpProxy('127.0.0.1', 1)
  await dead.start()
  await dead.cut() // a port where nothing listens any more
  const config = testConfig({ schema, prefix }, { REDIS_URL: `redis://:secret@127.0.0.1:${dead.port}`, REDIS_START_TIMEOUT: '1500' })
  const started = Date.now()
  await assert.rejects(buildApp({ workerId: 0, workers: 1 }, config), (err: Error) => {
    assert.match(err.message, /Redis is not reachable at redis:\/\/127\.0\.0\.1:\d+\/? after 1500 ms.*REDIS_URL/)
    assert.doesNotMatch(err.message, /secret/, 'the password is not logged')
    return true
  })
  assert.ok(Date.now() - started < 6000)
})

test('a build that fails after Postgres and Redis are connected closes them: nothing holds the process open', async () => {
  const redis = TcpProxy.forUrl(REDIS_URL)
  const pg = TcpProxy.forUrl(DATABASE_URL)
  await redis.start()
  await pg.start()
  try {
    const config = testConfig({ schema, prefix }, { DATABASE_URL: pg.rewrite(DATABASE_URL), REDIS_URL: redis.rewrite(REDIS_URL) })
    // A plugin registered after both clients fails (@fastify/jwt refuses an empty secret).
    await assert.rejects(buildApp({ workerId: 0, workers: 1 }, { ...config, jwtSecret: '' }), /secret/i)
    await waitFor(async () => redis.connections === 0 && pg.connections === 0, 'no connection left to Redis or Postgres', 5000, 50)
  } finally {
    await redis.close()
    await pg.close()
  }
})

test('a worker shuts down promptly while Redis and Postgres are away', async () => {
  await redisProxy.cut()
  await pgProxy.cut()
  await waitFor(async () => (await health()).body.checks.redis.ok === false, 'redis seen down', 30000, 200)
  const started = Date.now()
  await app.close() // QUIT would be refused without an offline queue: the client must just disconnect
  closed = true
  assert.ok(Date.now() - started < 3000, `closed in ${Date.now() - started} ms`)
  // No reconnect loop is left behind: with the proxy back, nobody connects to it any more.
  await redisProxy.restore()
  await new Promise((resolve) => setTimeout(resolve, 3000)) // longer than the 2 s max reconnect delay
  assert.equal(redisProxy.connections, 0, 'the closed app does not reconnect to Redis')
})
