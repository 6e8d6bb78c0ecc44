// TRUST_PROXY against the built server with 2 workers and the real Redis rate limiter: off by default
// (a spoofed X-Forwarded-For changes nothing, everyone from this socket shares one counter), and with
// the proxy's address trusted, the client address it forwards is the rate-limit key.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { clusterEnv, countKeys, deleteKeys, dropSchema, isolation, REDIS_URL } from './helpers.js'
import { freePort, waitFor } from '../../../test/helpers/index.ts'
import { Server, request } from './cluster-harness.js'

const { schema, prefix } = isolation('proxy')
const servers: Server[] = []

after(async () => {
  for (const s of servers) await s.stop()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

async function start (label: string, env: Record<string, string>): Promise<{ port: number, prefix: string }> {
  const port = await freePort()
  const p = `${prefix}${label}:`
  const server = new Server(port, clusterEnv({ schema, prefix: p }, {
    RATE_LIMIT_MAX: '5',
    RATE_LIMIT_WINDOW: '600000',
    ...env
  }))
  servers.push(server)
  await server.start()
  return { port, prefix: p }
}

async function counter (keyPrefix: string, ip: string): Promise<string | null> {
  const redis = new Redis(REDIS_URL, { keyPrefix, maxRetriesPerRequest: 1 })
  try { return await redis.get(`rl:${ip}`) } finally { redis.disconnect() }
}

const xff = (v: string): { headers: Record<string, string> } => ({ headers: { 'x-forwarded-for': v } })

test('TRUST_PROXY off (default): a spoofed X-Forwarded-For is ignored, the socket address is the key', async () => {
  const { port, prefix: p } = await start('off', {})
  const statuses: number[] = []
  for (let i = 1; i <= 6; i++) statuses.push((await request(port, 'GET', '/', xff(`203.0.113.${i}`))).status)
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429], 'six different forged addresses share one counter')
  assert.equal(await counter(p, '127.0.0.1'), '6')
  assert.equal(await countKeys(`${p}rl:203.`), 0, 'no counter for a forged address')
})

test('TRUST_PROXY=127.0.0.1/32: the address the trusted proxy forwards is the key, one counter per client', async () => {
  const { port, prefix: p } = await start('on', { TRUST_PROXY: '127.0.0.1/32' })
  const a: number[] = []
  for (let i = 0; i < 6; i++) a.push((await request(port, 'GET', '/', xff('203.0.113.7'))).status)
  assert.deepEqual(a, [200, 200, 200, 200, 200, 429], 'client 203.0.113.7 has its own limit')
  assert.equal((await request(port, 'GET', '/', xff('203.0.113.8'))).status, 200, 'another client is not limited by it')
  // A client prepending its own entry: only the entry added by the trusted proxy (rightmost) counts.
  assert.equal((await request(port, 'GET', '/', xff('198.51.100.9, 203.0.113.8'))).status, 200)
  assert.equal(await counter(p, '203.0.113.7'), '6')
  assert.equal(await counter(p, '203.0.113.8'), '2')
  assert.equal(await counter(p, '198.51.100.9'), null, 'the spoofed leftmost entry is not the client')
})

test('a client\'s x-request-id is logged as clientRequestId, never as the request id', async () => {
  const server = servers[0]
  assert.ok(server !== undefined)
  const r = await request(server.port, 'GET', '/', { headers: { 'x-request-id': 'trace-42.a:b' } })
  const reqId = String(r.headers['x-request-id'])
  assert.match(reqId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  const line = await waitFor(() => server.logs().find((l) => l['reqId'] === reqId), 'the request\'s log line', 10000, 50)
  assert.equal(line['clientRequestId'], 'trace-42.a:b')
  assert.equal(server.logs().filter((l) => l['reqId'] === 'trace-42.a:b').length, 0)
  // Anything but a short plain token is not logged at all.
  const odd = await request(server.port, 'GET', '/', { headers: { 'x-request-id': 'not plain; <script>' } })
  const oddLine = await waitFor(() => server.logs().find((l) => l['reqId'] === odd.headers['x-request-id']), 'its log line', 10000, 50)
  assert.equal('clientRequestId' in oddLine, false)
})
