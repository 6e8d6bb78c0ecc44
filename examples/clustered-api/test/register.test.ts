// POST /users: a taken username is answered 409 before any scrypt (hashes counted through the app's
// own limiter), and the route has its own rate limit (REGISTER_RATE_LIMIT_MAX), far below the global
// one: over it, 429 with Retry-After and no hash, while other routes still answer. Its own file, so
// its app is the only one in this process (pidMetrics uses the global registry).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { migrate } from '../src/db.js'
import { DATABASE_URL, deleteKeys, dropSchema, isolation, testConfig } from './helpers.js'

const { schema, prefix } = isolation('register')
let app: FastifyInstance
/** Every hash this app's limiter was asked to run (register, login, rehash all go through it). */
let hashes = 0
const json = (body: unknown): { headers: Record<string, string>, payload: string } =>
  ({ headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) })
const register = async (username: string, remoteAddress = '127.0.0.1'): Promise<{ statusCode: number, headers: Record<string, unknown>, body: string }> =>
  await app.inject({ method: 'POST', url: '/users', remoteAddress, ...json({ username, password: 'correct horse battery' }) })

before(async () => {
  await migrate(DATABASE_URL, schema)
  app = await buildApp({ workerId: 0, workers: 1 }, testConfig({ schema, prefix }, { REGISTER_RATE_LIMIT_MAX: '4', RATE_LIMIT_MAX: '300' }))
  await app.ready()
  const run = app.hashing.run.bind(app.hashing)
  app.hashing.run = async (task) => { hashes++; return await run(task) }
})

after(async () => {
  await app.close()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

test('a taken username (any case) is 409 without a hash; the 5th registration from one address in the window is 429, also without a hash', async () => {
  const first = await register('Taken')
  assert.equal(first.statusCode, 201, first.body)
  assert.equal(hashes, 1)

  for (const name of ['Taken', 'taken']) {
    const dup = await register(name)
    assert.equal(dup.statusCode, 409, dup.body)
    assert.equal(JSON.parse(dup.body).code, 'USERNAME_TAKEN')
  }
  assert.equal(hashes, 1, 'no scrypt for a taken name')

  const fourth = await register('another')
  assert.equal(fourth.statusCode, 201, fourth.body)
  assert.equal(hashes, 2)

  // REGISTER_RATE_LIMIT_MAX=4 per window: the 5th answer is 429 whatever the name, and costs nothing.
  const limited = await register('third-name')
  assert.equal(limited.statusCode, 429, limited.body)
  assert.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After says when')
  assert.equal(hashes, 2, 'no scrypt for a refused registration')

  // The global limit (300) is a separate counter: the same address still reaches other routes, and
  // another address still registers.
  assert.equal((await app.inject({ method: 'GET', url: '/', remoteAddress: '127.0.0.1' })).statusCode, 200)
  assert.equal((await register('from-elsewhere', '10.1.2.3')).statusCode, 201)
  assert.equal(hashes, 3)
})
