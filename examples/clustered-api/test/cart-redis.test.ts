// The cart's cap and the Redis eviction-policy check, against the built server with 2 workers and a
// redis-server started here with `--maxmemory-policy allkeys-lru` (the shared Redis is never
// reconfigured): worker 0 warns once at start; a cart holds at most CART_MAX_ITEMS distinct SKUs, even
// when both workers add at the same instant.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { Writable } from 'node:stream'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { clusterEnv, dropSchema, isolation, REDIS_URL } from './helpers.js'
import { freePort, waitFor } from '../../../test/helpers/index.ts'
import { Server, request } from './cluster-harness.js'
import { checkEvictionPolicy } from '../src/redis.js'

const { schema, prefix } = isolation('cart')
let redisServer: ChildProcess | undefined
let lruUrl = ''
let server: Server
let port = 0

const killRedis = (): void => { if (redisServer?.exitCode === null) redisServer.kill('SIGKILL') }
process.on('exit', killRedis)

before(async () => {
  const redisPort = await freePort()
  redisServer = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'], { stdio: 'ignore' })
  lruUrl = `redis://127.0.0.1:${redisPort}`
  await waitFor(async () => {
    const r = new Redis(lruUrl, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    r.on('error', () => {}) // refused until it listens: the rejected connect() says so
    try { await r.connect(); return (await r.ping()) === 'PONG' } finally { r.disconnect() }
  }, 'the private redis-server', 20000, 100)
  port = await freePort()
  server = new Server(port, clusterEnv({ schema, prefix }, {
    REDIS_URL: lruUrl,
    CART_MAX_ITEMS: '3'
  }))
  await server.start()
})

after(async () => {
  try {
    await server?.stop()
    await dropSchema(schema)
  } finally {
    killRedis() // its data (carts, counters) goes with it
  }
})

async function token (username: string): Promise<string> {
  const creds = { username, password: 'correct horse battery' }
  assert.equal((await request(port, 'POST', '/users', { body: creds })).status, 201)
  return (await request<{ token: string }>(port, 'POST', '/login', { body: creds })).body.token
}

test('a Redis that may evict is reported once at start, naming the policy and the fix', () => {
  const warnings = server.logs().filter((l) => /^redis maxmemory-policy is/.test(String(l['msg'])))
  assert.equal(warnings.length, 1, 'worker 0 checks, not every worker')
  assert.equal(warnings[0]?.['policy'], 'allkeys-lru')
  assert.equal(warnings[0]?.['workerId'], 0)
  assert.match(String(warnings[0]?.['msg']), /evict token revocations .* Set maxmemory-policy noeviction, or keep revocations in a Redis of their own/)
})

test('the check is quiet on a noeviction Redis (the shared one)', async () => {
  const lines: string[] = []
  const log = pino({ level: 'info' }, new Writable({ write (chunk: Buffer, _enc, cb) { lines.push(chunk.toString()); cb() } }))
  const shared = new Redis(REDIS_URL)
  const lru = new Redis(lruUrl)
  try {
    assert.equal(await checkEvictionPolicy(shared, REDIS_URL, log), 'noeviction')
    assert.deepEqual(lines, [])
    assert.equal(await checkEvictionPolicy(lru, lruUrl, log), 'allkeys-lru')
    assert.equal(lines.length, 1)
  } finally {
    shared.disconnect()
    lru.disconnect()
  }
})

test('a cart holds at most CART_MAX_ITEMS distinct SKUs; an add answers the item, not the whole cart', async () => {
  const t = await token('shopper')
  const adds = []
  for (const sku of ['a', 'b', 'c']) adds.push((await request(port, 'POST', '/cart/items', { token: t, body: { sku, quantity: 2 } })))
  assert.deepEqual(adds.map((r) => r.status), [200, 200, 200])
  const { pid, workerId, ...item } = adds[2]?.body as Record<string, unknown>
  assert.deepEqual(item, { sku: 'c', quantity: 2, distinctItems: 3 })
  assert.equal(pid, adds[2]?.pid)
  assert.equal(workerId, adds[2]?.workerId)

  const full = await request<{ code: string, message: string }>(port, 'POST', '/cart/items', { token: t, body: { sku: 'd' } })
  assert.equal(full.status, 409)
  assert.equal(full.body.code, 'CART_FULL')
  assert.equal(full.body.message, 'the cart holds at most 3 distinct items; remove one first')
  const more = await request(port, 'POST', '/cart/items', { token: t, body: { sku: 'a', quantity: 5 } })
  assert.deepEqual({ status: more.status, quantity: (more.body as { quantity: number }).quantity }, { status: 200, quantity: 7 }, 'an SKU already in the cart can still grow')
  const cart = await request<{ items: unknown }>(port, 'GET', '/cart', { token: t })
  assert.deepEqual(cart.body.items, [{ sku: 'a', quantity: 7 }, { sku: 'b', quantity: 2 }, { sku: 'c', quantity: 2 }])
})

test('one SKU holds at most 1000: the add that would pass it is a 409 and changes nothing, even when adds race on both workers', async () => {
  const t = await token('bulk')
  const first = await request(port, 'POST', '/cart/items', { token: t, body: { sku: 'bolt', quantity: 995 } })
  assert.equal(first.status, 200)
  const over = await request<{ code: string, message: string }>(port, 'POST', '/cart/items', { token: t, body: { sku: 'bolt', quantity: 6 } })
  assert.deepEqual({ status: over.status, code: over.body.code, message: over.body.message }, { status: 409, code: 'CART_QUANTITY_LIMIT', message: 'the cart holds at most 1000 of one item' })
  // Ten adds of 1 at once for the last 5 places: exactly 5 get in, whichever worker takes them.
  const racing = await Promise.all(Array.from({ length: 10 }, async () => await request(port, 'POST', '/cart/items', { token: t, body: { sku: 'bolt' } })))
  assert.deepEqual(racing.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 409, 409, 409, 409, 409])
  const cart = await request<{ items: unknown }>(port, 'GET', '/cart', { token: t })
  assert.deepEqual(cart.body.items, [{ sku: 'bolt', quantity: 1000 }])
})

test('ten distinct SKUs added at once through both workers: exactly 3 get in (the check and the add are one script)', async () => {
  const t = await token('racer')
  const results = await Promise.all(Array.from({ length: 10 }, async (_v, i) => await request(port, 'POST', '/cart/items', { token: t, body: { sku: `sku${i}` } })))
  assert.equal(new Set(results.map((r) => r.pid)).size, 2, 'both workers took part')
  assert.deepEqual(results.map((r) => r.status).sort(), [200, 200, 200, 409, 409, 409, 409, 409, 409, 409])
  const cart = await request<{ items: unknown[] }>(port, 'GET', '/cart', { token: t })
  assert.equal(cart.body.items.length, 3)
})
