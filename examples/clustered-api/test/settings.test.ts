// Settings the README promises, on an app built with non-default values; and a bug in a route a user
// adds. Its own file, so its app is the only one in this process (pidMetrics uses the global registry).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { migrate } from '../src/db.js'
import { DATABASE_URL, countKeys, deleteKeys, dropSchema, isolation, testConfig } from './helpers.js'

const { schema, prefix } = isolation('settings')
let app: FastifyInstance | undefined
const json = (body: unknown, token?: string): { headers: Record<string, string>, payload: string } =>
  ({ headers: { 'content-type': 'application/json', ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) }, payload: JSON.stringify(body) })

before(async () => {
  await migrate(DATABASE_URL, schema)
  const config = testConfig({ schema, prefix }, { JWT_EXPIRES_IN: '120', CART_TTL: '60' })
  app = await buildApp({ workerId: 0, workers: 1 }, config)
  // A route with a bug, added the way a user extends the app.
  app.get('/boom', async () => { throw new Error('secret detail of a bug') })
  await app.ready()
})

after(async () => {
  await app?.close()
  await dropSchema(schema)
  await deleteKeys(prefix)
  assert.equal(await countKeys(prefix), 0)
})

test('JWT_EXPIRES_IN sets the token lifetime and CART_TTL the cart expiry', async () => {
  assert.ok(app !== undefined)
  const password = 'correct horse battery'
  assert.equal((await app.inject({ method: 'POST', url: '/users', ...json({ username: 'ttl-user', password }) })).statusCode, 201)
  const login = await app.inject({ method: 'POST', url: '/login', ...json({ username: 'ttl-user', password }) })
  assert.equal(login.statusCode, 200, login.body)
  const { token, expiresIn } = login.json<{ token: string, expiresIn: number }>()
  assert.equal(expiresIn, 120)
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { iat: number, exp: number, sub: string }
  assert.equal(claims.exp - claims.iat, 120)
  const added = await app.inject({ method: 'POST', url: '/cart/items', ...json({ sku: 'tea' }, token) })
  assert.equal(added.statusCode, 200, added.body)
  const ttl = await app.redis.pttl(`cart:${claims.sub}`) // the client adds REDIS_PREFIX
  assert.ok(ttl > 50_000 && ttl <= 60_000, `cart expires in ${ttl} ms with CART_TTL=60`)
})

test('a bug in a route is a 500 with the documented shape and code, and nothing of the error leaks', async () => {
  assert.ok(app !== undefined)
  const boom = await app.inject({ method: 'GET', url: '/boom' })
  assert.equal(boom.statusCode, 500)
  assert.deepEqual(Object.keys(boom.json()).sort(), ['code', 'error', 'message', 'requestId', 'statusCode'])
  assert.equal(boom.json<{ code: string }>().code, 'INTERNAL_ERROR')
  assert.equal(boom.json<{ requestId: string }>().requestId, boom.headers['x-request-id'])
  assert.doesNotMatch(boom.body, /secret detail/)
})
