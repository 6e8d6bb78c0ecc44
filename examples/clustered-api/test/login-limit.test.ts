// The failed-login limit on a real 2-worker cluster: every worker counts the same attempts (Redis),
// per username and per client address; 429 with Retry-After; reset by a successful login; exact
// under concurrent guesses. Each test sends from its own loopback address (127.0.0.x, via
// localAddress) so the per-address counters of the tests never meet.
//
// The window is long (10 min): every failure of a test must land inside one window, and each costs a
// 128 MiB scrypt, which on a loaded machine can take a second or more (9 of them outlasted a 4 s
// window). The end of the window is not waited for: the test checks the count's TTL in Redis is the
// window, then shortens that TTL (Redis's own clock, fast-forwarded) and checks the login works again.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { clusterEnv, countKeys, deleteKeys, dropSchema, isolation, REDIS_URL } from './helpers.js'
import { freePort, waitFor } from '../../../test/helpers/index.ts'
import { Server, request, type Response } from './cluster-harness.js'

const { schema, prefix } = isolation('loginlimit')
const PER_USER = 3
const PER_ADDRESS = 8
const WINDOW_MS = 600_000
let server: Server
let port = 0

before(async () => {
  port = await freePort()
  server = new Server(port, clusterEnv({ schema, prefix }, {
    SHUTDOWN_TIMEOUT: '10000',
    LOGIN_FAILURES_PER_USER: String(PER_USER),
    LOGIN_FAILURES_PER_ADDRESS: String(PER_ADDRESS),
    LOGIN_FAILURE_WINDOW: String(WINDOW_MS),
    LOG_LEVEL: 'error'
  }))
  await server.start()
})

after(async () => {
  const code = await server?.stop()
  await dropSchema(schema)
  await deleteKeys(prefix)
  assert.equal(await countKeys(prefix), 0)
  assert.equal(code, 0)
})

const password = 'correct horse battery'
async function register (username: string): Promise<void> {
  const r = await request(port, 'POST', '/users', { body: { username, password } })
  assert.equal(r.status, 201, JSON.stringify(r.body))
}
async function login (username: string, pw: string, from: string): Promise<Response<{ code?: string, message?: string, token?: string }>> {
  return await request(port, 'POST', '/login', { body: { username, password: pw }, localAddress: from })
}
function retryAfter (r: Response): number {
  const v = Number(r.headers['retry-after'])
  assert.ok(Number.isInteger(v) && v >= 1 && v <= WINDOW_MS / 1000, `Retry-After is whole seconds within the window (got ${String(r.headers['retry-after'])})`)
  return v
}

test('per username, across both workers: 401 up to the limit, then 429 with Retry-After, even for the right password, until the window ends', async () => {
  const from = '127.0.0.11'
  await register('victim')
  const pids = new Set<number>()
  for (let i = 0; i < PER_USER; i++) {
    const r = await login('victim', `wrong password ${i}`, from)
    assert.equal(r.status, 401, `failure ${i + 1} of ${PER_USER}`)
    pids.add(r.pid)
  }
  assert.equal(pids.size, 2, 'the failures were spread over both workers')
  const blocked = await login('victim', 'wrong again', from)
  assert.equal(blocked.status, 429)
  assert.equal(blocked.body.code, 'TOO_MANY_FAILED_LOGINS')
  assert.match(blocked.body.message ?? '', /username/)
  const wait = retryAfter(blocked)
  // Locked on every worker, the right password included (the limit is checked before the password).
  const lockedEverywhere = new Set<number>()
  for (let i = 0; i < 20 && lockedEverywhere.size < 2; i++) {
    const r = await login('victim', password, from)
    assert.equal(r.status, 429, 'the right password is refused while locked')
    lockedEverywhere.add(r.pid)
  }
  assert.equal(lockedEverywhere.size, 2, 'both workers refuse')
  // The count lives in Redis for the rest of the window (from the first failure), which is what
  // Retry-After announced; end the window now by making Redis expire it.
  const redis = new Redis(REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 })
  try {
    const key = 'login-fail:user:victim'
    const ttl = await redis.pttl(key)
    assert.ok(ttl > 0 && ttl <= WINDOW_MS, `the count expires within the window (PTTL ${ttl})`)
    assert.ok(Math.abs(wait - Math.ceil(ttl / 1000)) <= 60, `Retry-After ${wait} s is the count's remaining life (${ttl} ms)`)
    assert.equal(await redis.pexpire(key, 1), 1)
    await waitFor(async () => await redis.exists(key) === 0, 'the count expired', 10000)
  } finally {
    redis.disconnect()
  }
  const ok = await login('victim', password, from)
  assert.equal(ok.status, 200, 'the window has ended: the right password works again')
})

test('a successful login resets the username\'s failures', async () => {
  const from = '127.0.0.12'
  await register('forgetful')
  for (let i = 0; i < PER_USER - 1; i++) assert.equal((await login('forgetful', 'wrong password', from)).status, 401)
  assert.equal((await login('forgetful', password, from)).status, 200)
  // Without the reset the next failure would be number PER_USER and the one after it a 429.
  for (let i = 0; i < PER_USER; i++) assert.equal((await login('forgetful', 'wrong password', from)).status, 401, `failure ${i + 1} after the reset`)
  assert.equal((await login('forgetful', 'wrong password', from)).status, 429)
})

test('per address: many usernames from one address are stopped; another address is not', async () => {
  const from = '127.0.0.13'
  const pids = new Set<number>()
  for (let i = 0; i < PER_ADDRESS; i++) {
    const r = await login(`spray${i}`, 'wrong password', from)
    assert.equal(r.status, 401, `failure ${i + 1} of ${PER_ADDRESS} from one address`)
    pids.add(r.pid)
  }
  assert.equal(pids.size, 2, 'spread over both workers')
  const blocked = await login('spray-next', 'wrong password', from)
  assert.equal(blocked.status, 429)
  assert.match(blocked.body.message ?? '', /address/)
  retryAfter(blocked)
  assert.equal((await login('spray-next', 'wrong password', '127.0.0.14')).status, 401, 'another address still gets its own budget')
})

test('concurrent guesses through both workers: exactly the limit is verified, the rest get 429', async () => {
  const from = '127.0.0.15'
  await register('raced')
  const results = await Promise.all(Array.from({ length: 12 }, async (_, i) => await login('raced', `wrong guess ${i}`, from)))
  const byStatus = (s: number): number => results.filter((r) => r.status === s).length
  assert.equal(byStatus(401), PER_USER, `statuses: ${results.map((r) => r.status).join(',')}`)
  assert.equal(byStatus(429), 12 - PER_USER)
  assert.equal(new Set(results.map((r) => r.pid)).size, 2, 'both workers took part')
})
