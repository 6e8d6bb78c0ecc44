// The worker app in-process (no cluster): every route against the real Postgres and Redis, through
// app.inject. The cross-worker behaviour is covered by cluster.test.ts on the built server.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { migrate } from '../src/db.js'
import { hashPassword } from '../src/passwords.js'
import { waitFor } from '../../../test/helpers/index.ts'
import { DATABASE_URL, TEST_SECRET, countKeys, deleteKeys, dropSchema, isolation, query, signJwt, testConfig } from './helpers.js'

const { schema, prefix } = isolation('app')
let app: FastifyInstance

const json = (body: unknown, token?: string): { headers: Record<string, string>, payload: string } =>
  ({ headers: { 'content-type': 'application/json', ...(token !== undefined ? bearer(token) : {}) }, payload: JSON.stringify(body) })
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function register (username: string, password = 'correct horse battery'): Promise<string> {
  const r = await app.inject({ method: 'POST', url: '/users', ...json({ username, password }) })
  assert.equal(r.statusCode, 201, r.body)
  const l = await app.inject({ method: 'POST', url: '/login', ...json({ username, password }) })
  assert.equal(l.statusCode, 200, l.body)
  return l.json<{ token: string }>().token
}

before(async () => {
  await migrate(DATABASE_URL, schema)
  const config = testConfig({ schema, prefix }, { BODY_LIMIT: '4096', HEALTH_CACHE_TTL: '300' })
  app = await buildApp({ workerId: 0, workers: 1 }, config)
  await app.ready()
})

after(async () => {
  await app?.close()
  await dropSchema(schema)
  await deleteKeys(prefix)
  assert.equal(await countKeys(prefix), 0)
})

describe('validation', () => {
  test('a missing field is a 400 naming it', async () => {
    const r = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'alice' }) })
    assert.equal(r.statusCode, 400)
    const body = r.json<{ message: string, requestId: string }>()
    assert.match(body.message, /body must have required property 'password'/)
    assert.ok(body.requestId.length > 0)
  })

  test('a bad field is a 400 naming it', async () => {
    const r = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'a b', password: 'long enough' }) })
    assert.equal(r.statusCode, 400)
    assert.match(r.json<{ message: string }>().message, /body\/username/)
    const short = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'bob', password: 'short' }) })
    assert.equal(short.statusCode, 400)
    assert.match(short.json<{ message: string }>().message, /body\/password must NOT have fewer than 8 characters/)
  })

  test('an unknown route is a JSON 404 with a code and a request id', async () => {
    const r = await app.inject({ method: 'GET', url: '/nope' })
    assert.equal(r.statusCode, 404)
    assert.deepEqual(Object.keys(r.json()).sort(), ['code', 'error', 'message', 'requestId', 'statusCode'])
    assert.equal(r.json<{ code: string }>().code, 'ROUTE_NOT_FOUND')
    assert.equal(r.json<{ requestId: string }>().requestId, r.headers['x-request-id'])
  })

  test('every error answer has the documented shape with a code: 401, 404 of a note (500: settings.test.ts)', async () => {
    const shape = (r: { json: <T>() => T }): string[] => Object.keys(r.json<Record<string, unknown>>()).sort()
    const fields = ['code', 'error', 'message', 'requestId', 'statusCode']
    const noToken = await app.inject({ method: 'GET', url: '/whoami' })
    assert.equal(noToken.statusCode, 401)
    assert.deepEqual(shape(noToken), fields)
    assert.equal(typeof noToken.json<{ code: unknown }>().code, 'string')
    const token = await register('shape-user')
    const missing = await app.inject({ method: 'GET', url: '/notes/999999', headers: bearer(token) })
    assert.equal(missing.statusCode, 404)
    assert.deepEqual(shape(missing), fields)
    assert.equal(missing.json<{ code: string }>().code, 'NOTE_NOT_FOUND')
  })

  test('a client\'s x-request-id never becomes the request id', async () => {
    for (const given of ['trace-42.a:b', 'x'.repeat(500)]) {
      const r = await app.inject({ method: 'GET', url: '/', headers: { 'x-request-id': given } })
      assert.match(String(r.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
    }
  })

  test('malformed JSON is a 400', async () => {
    const r = await app.inject({ method: 'POST', url: '/login', headers: { 'content-type': 'application/json' }, payload: '{"username":' })
    assert.equal(r.statusCode, 400)
  })

  test('a body over BODY_LIMIT is a 413', async () => {
    const r = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'big', password: 'x'.repeat(10000) }) })
    assert.equal(r.statusCode, 413)
  })

  test('a non-numeric note id is a 400', async () => {
    const token = await register('validator')
    const r = await app.inject({ method: 'GET', url: '/notes/abc', headers: bearer(token) })
    assert.equal(r.statusCode, 400)
    assert.match(r.json<{ message: string }>().message, /params\/id must be integer/)
  })
})

describe('users and tokens', () => {
  test('register, duplicate, login, wrong password', async () => {
    const token = await register('alice')
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
    const dup = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'alice', password: 'whatever123' }) })
    assert.equal(dup.statusCode, 409)
    const wrong = await app.inject({ method: 'POST', url: '/login', ...json({ username: 'alice', password: 'wrong password' }) })
    assert.equal(wrong.statusCode, 401)
    const nobody = await app.inject({ method: 'POST', url: '/login', ...json({ username: 'nobody', password: 'wrong password' }) })
    assert.equal(nobody.statusCode, 401)
    assert.equal(nobody.json<{ message: string }>().message, wrong.json<{ message: string }>().message, 'no user enumeration')
    const [row] = await query<{ password_hash: string }>(`SELECT password_hash FROM "${schema}".users WHERE username = 'alice'`)
    assert.match(row?.password_hash ?? '', /^scrypt\$131072\$8\$1\$/)
  })

  test('whoami needs a valid token: missing, forged, expired and garbage are 401', async () => {
    const token = await register('bob')
    const ok = await app.inject({ method: 'GET', url: '/whoami', headers: bearer(token) })
    assert.equal(ok.statusCode, 200)
    assert.equal(ok.json<{ username: string }>().username, 'bob')
    assert.equal(ok.headers['x-pid'], String(process.pid))
    assert.equal(ok.headers['x-worker-id'], '0')
    assert.ok(typeof ok.headers['x-request-id'] === 'string')

    const now = Math.floor(Date.now() / 1000)
    const claims = { sub: '1', username: 'bob', jti: 'j1', iat: now, exp: now + 600 }
    const cases: Array<[string, Record<string, string>]> = [
      ['missing', {}],
      ['forged', bearer(signJwt(claims, 'another-secret-another-secret-another'))],
      ['expired', bearer(signJwt({ ...claims, iat: now - 7200, exp: now - 3600 }, TEST_SECRET))],
      ['garbage', bearer('not.a.token')]
    ]
    for (const [name, headers] of cases) {
      const r = await app.inject({ method: 'GET', url: '/whoami', headers })
      assert.equal(r.statusCode, 401, `${name}: ${r.body}`)
    }
    // Sanity: the hand-made token is accepted when it is valid, so the 401s above are for the right reason.
    const handmade = await app.inject({ method: 'GET', url: '/whoami', headers: bearer(signJwt(claims, TEST_SECRET)) })
    assert.equal(handmade.statusCode, 200)
  })

  test('logout revokes the token in Redis for its remaining life', async () => {
    const token = await register('carol')
    const out = await app.inject({ method: 'POST', url: '/logout', headers: bearer(token) })
    assert.equal(out.statusCode, 204)
    const again = await app.inject({ method: 'GET', url: '/whoami', headers: bearer(token) })
    assert.equal(again.statusCode, 401)
    assert.match(again.json<{ message: string }>().message, /revoked/)
    const ttl = await app.redis.pttl('revoked:' + JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).jti)
    assert.ok(ttl > 3500_000 && ttl <= 3600_000, `ttl ${ttl}`)
  })
})

describe('notes', () => {
  test('create, list, get, delete; scoped to the owner', async () => {
    const dave = await register('dave')
    const erin = await register('erin')
    const c = await app.inject({ method: 'POST', url: '/notes', ...json({ title: 'hello', body: 'world' }, dave) })
    assert.equal(c.statusCode, 201, c.body)
    const note = c.json<{ id: number, title: string, body: string }>()
    assert.equal(note.title, 'hello')
    const list = await app.inject({ method: 'GET', url: '/notes', headers: bearer(dave) })
    assert.deepEqual(list.json<{ notes: Array<{ id: number }> }>().notes.map((n) => n.id), [note.id])
    const one = await app.inject({ method: 'GET', url: `/notes/${note.id}`, headers: bearer(dave) })
    assert.equal(one.json<{ body: string }>().body, 'world')
    const theirs = await app.inject({ method: 'GET', url: `/notes/${note.id}`, headers: bearer(erin) })
    assert.equal(theirs.statusCode, 404)
    assert.equal(theirs.json<{ code: string }>().code, 'NOTE_NOT_FOUND')
    const del = await app.inject({ method: 'DELETE', url: `/notes/${note.id}`, headers: bearer(erin) })
    assert.equal(del.statusCode, 404)
    const mine = await app.inject({ method: 'DELETE', url: `/notes/${note.id}`, headers: bearer(dave) })
    assert.equal(mine.statusCode, 204)
    const gone = await app.inject({ method: 'GET', url: `/notes/${note.id}`, headers: bearer(dave) })
    assert.equal(gone.statusCode, 404)
  })

  test('notes need a token', async () => {
    const r = await app.inject({ method: 'POST', url: '/notes', ...json({ title: 'x' }) })
    assert.equal(r.statusCode, 401)
  })
})

describe('cart', () => {
  test('items add up in Redis', async () => {
    const token = await register('frank')
    await app.inject({ method: 'POST', url: '/cart/items', ...json({ sku: 'apple', quantity: 2 }, token) })
    const r = await app.inject({ method: 'POST', url: '/cart/items', ...json({ sku: 'apple' }, token) })
    assert.equal(r.statusCode, 200)
    assert.deepEqual(r.json(), { sku: 'apple', quantity: 3, distinctItems: 1, pid: process.pid, workerId: 0 })
    const g = await app.inject({ method: 'GET', url: '/cart', headers: bearer(token) })
    assert.equal(g.json<{ totalQuantity: number }>().totalQuantity, 3)
    const d = await app.inject({ method: 'DELETE', url: '/cart', headers: bearer(token) })
    assert.equal(d.statusCode, 204)
    const empty = await app.inject({ method: 'GET', url: '/cart', headers: bearer(token) })
    assert.deepEqual(empty.json<{ items: unknown }>().items, [])
  })
})

describe('rate limit', () => {
  test('counts per client IP under REDIS_PREFIX, and says so in the headers', async () => {
    const r = await app.inject({ method: 'GET', url: '/' })
    assert.equal(r.statusCode, 200)
    assert.equal(r.headers['x-ratelimit-limit'], '300')
    const raw = await app.redis.get('rl:127.0.0.1')
    assert.ok(Number(raw) >= 1, `counter rl:127.0.0.1 = ${raw}`)
    assert.ok(await app.redis.pttl('rl:127.0.0.1') > 0, 'the window expires')
  })
})

describe('metrics', () => {
  test('/metrics is not served on the app port; the series are still recorded for the scrape', async () => {
    const r = await app.inject({ method: 'GET', url: '/metrics' })
    assert.equal(r.statusCode, 404)
    assert.match(await app.pidMetrics.registry.metrics(), new RegExp(`http_requests_total\\{[^}]*pid="${process.pid}"`))
  })
})

describe('health and migrations', () => {
  test('health answers a small fixed body: a status and two booleans', async () => {
    const r = await app.inject({ method: 'GET', url: '/health' })
    assert.equal(r.statusCode, 200, r.body)
    assert.deepEqual(r.json(), { status: 'ok', checks: { postgres: { ok: true }, redis: { ok: true } } })
    assert.equal(r.headers['x-pid'], String(process.pid), 'which process answered is in the headers')
    assert.equal(r.headers['x-ratelimit-limit'], undefined, 'health is not rate limited')
  })

  test('health checks are coalesced: one round in flight per worker, reused for HEALTH_CACHE_TTL', async () => {
    // Count the real commands this worker sends (the calls still reach Postgres and Redis).
    const counts = { ping: 0, select: 0 }
    const ping = app.redis.ping.bind(app.redis)
    const query = app.pg.query.bind(app.pg)
    app.redis.ping = (async () => { counts.ping++; return await ping() }) as typeof app.redis.ping
    app.pg.query = (async (sql: string, ...rest: unknown[]) => {
      if (sql === 'SELECT 1') counts.select++
      return await (query as (...a: unknown[]) => Promise<unknown>)(sql, ...rest)
    }) as typeof app.pg.query
    try {
      // Let the round cached by the previous test expire (HEALTH_CACHE_TTL is 300 ms here).
      await new Promise((resolve) => setTimeout(resolve, 350))
      const burst = await Promise.all(Array.from({ length: 50 }, async () => await app.inject({ method: 'GET', url: '/health' })))
      assert.deepEqual([...new Set(burst.map((r) => r.statusCode))], [200])
      assert.deepEqual(counts, { ping: 1, select: 1 }, '50 concurrent requests, one round of checks')
      await app.inject({ method: 'GET', url: '/health' })
      assert.deepEqual(counts, { ping: 1, select: 1 }, 'still cached')
      await waitFor(async () => {
        await app.inject({ method: 'GET', url: '/health' })
        return counts.ping === 2
      }, 'a new round once the cache expired', 5000, 100)
      assert.equal(counts.select, 2)
    } finally {
      app.redis.ping = ping
      app.pg.query = query
    }
  })

  test('migrations racing on a fresh schema apply each version exactly once (advisory lock)', async () => {
    const fresh = isolation('race').schema
    try {
      const results = await Promise.all([1, 2, 3, 4].map(() => migrate(DATABASE_URL, fresh)))
      const applied = results.flatMap((r) => r.applied).sort()
      assert.deepEqual(applied, [1, 2, 3])
      const rows = await query<{ version: number }>(`SELECT version FROM "${fresh}".schema_migrations ORDER BY version`)
      assert.deepEqual(rows.map((r) => r.version), [1, 2, 3])
      const again = await migrate(DATABASE_URL, fresh)
      assert.deepEqual(again, { applied: [], alreadyApplied: [1, 2, 3] })
    } finally {
      await dropSchema(fresh)
    }
  })
})

describe('settings the README promises reach the routes', () => {
  test('GET /notes?limit= returns the newest N; outside 1-100 is a 400', async () => {
    const token = await register('limiter')
    const ids: number[] = []
    for (const title of ['one', 'two', 'three']) {
      const r = await app.inject({ method: 'POST', url: '/notes', ...json({ title }, token) })
      assert.equal(r.statusCode, 201, r.body)
      ids.push(r.json<{ id: number }>().id)
    }
    const two = await app.inject({ method: 'GET', url: '/notes?limit=2', headers: bearer(token) })
    assert.equal(two.statusCode, 200)
    assert.deepEqual(two.json<{ notes: Array<{ id: number }> }>().notes.map((n) => n.id), [ids[2], ids[1]], 'newest first, two of three')
    const all = await app.inject({ method: 'GET', url: '/notes', headers: bearer(token) })
    assert.equal(all.json<{ notes: unknown[] }>().notes.length, 3, 'default 50 covers all three')
    for (const bad of ['0', '101', 'abc']) {
      const r = await app.inject({ method: 'GET', url: `/notes?limit=${bad}`, headers: bearer(token) })
      assert.equal(r.statusCode, 400, `limit=${bad}`)
      assert.match(r.json<{ message: string }>().message, /querystring\/limit/)
    }
  })
})

describe('usernames, rehash, paging', () => {
  test('usernames are case-insensitive: "Admin" and "admin" are one user, who keeps the case it chose', async () => {
    const token = await register('Admin')
    const dup = await app.inject({ method: 'POST', url: '/users', ...json({ username: 'admin', password: 'another password' }) })
    assert.equal(dup.statusCode, 409)
    assert.equal(dup.json<{ code: string }>().code, 'USERNAME_TAKEN')
    const other = await app.inject({ method: 'POST', url: '/login', ...json({ username: 'aDMIN', password: 'correct horse battery' }) })
    assert.equal(other.statusCode, 200)
    const who = await app.inject({ method: 'GET', url: '/whoami', headers: bearer(other.json<{ token: string }>().token) })
    assert.equal(who.json<{ username: string }>().username, 'Admin')
    assert.equal((await app.inject({ method: 'GET', url: '/whoami', headers: bearer(token) })).json<{ username: string }>().username, 'Admin')
  })

  test('migration 3 stops on existing names that differ only by case, naming them, and applies once they are resolved', async () => {
    const fresh = isolation('case').schema
    try {
      assert.deepEqual((await migrate(DATABASE_URL, fresh, () => {}, 2)).applied, [1, 2])
      await query(`INSERT INTO "${fresh}".users (username, password_hash) VALUES ('Bob', 'x'), ('carol', 'x'), ('bob', 'x'), ('BOB', 'x')`)
      await assert.rejects(migrate(DATABASE_URL, fresh), /^error: usernames differing only by case: Bob \(id 1\), bob \(id 3\), BOB \(id 4\)$/m)
      const still = await query<{ version: number }>(`SELECT version FROM "${fresh}".schema_migrations ORDER BY version`)
      assert.deepEqual(still.map((r) => r.version), [1, 2], 'nothing half-applied')
      await query(`UPDATE "${fresh}".users SET username = username || '_' || id WHERE id IN (3, 4)`)
      assert.deepEqual(await migrate(DATABASE_URL, fresh), { applied: [3], alreadyApplied: [1, 2] })
      await assert.rejects(query(`INSERT INTO "${fresh}".users (username, password_hash) VALUES ('CAROL', 'x')`), /users_username_lower_key/)
    } finally {
      await dropSchema(fresh)
    }
  })

  test('a login against a hash with weaker scrypt parameters stores one at today\'s cost', async () => {
    const old = await hashPassword('an old password', { N: 16384, r: 8, p: 1 })
    await query(`INSERT INTO "${schema}".users (username, password_hash) VALUES ('legacy', $1)`, [old])
    const login = await app.inject({ method: 'POST', url: '/login', ...json({ username: 'legacy', password: 'an old password' }) })
    assert.equal(login.statusCode, 200)
    const [row] = await query<{ password_hash: string }>(`SELECT password_hash FROM "${schema}".users WHERE username = 'legacy'`)
    assert.match(row?.password_hash ?? '', /^scrypt\$131072\$8\$1\$/)
    assert.notEqual(row?.password_hash, old)
    assert.equal((await app.inject({ method: 'POST', url: '/login', ...json({ username: 'legacy', password: 'an old password' }) })).statusCode, 200)
    assert.equal((await app.inject({ method: 'POST', url: '/login', ...json({ username: 'legacy', password: 'a wrong password' }) })).statusCode, 401)
  })

  test('GET /notes pages past 100 with a cursor: every note once, newest first, then nextCursor null', async () => {
    const token = await register('writer')
    const me = (await app.inject({ method: 'GET', url: '/whoami', headers: bearer(token) })).json<{ userId: number }>().userId
    await query(`INSERT INTO "${schema}".notes (user_id, title) SELECT $1, 'note ' || g FROM generate_series(1, 230) g`, [me])
    const ids: number[] = []
    let cursor: number | null = null
    const pages: number[] = []
    do {
      const r: Awaited<ReturnType<typeof app.inject>> = await app.inject({ method: 'GET', url: `/notes?limit=100${cursor === null ? '' : `&cursor=${cursor}`}`, headers: bearer(token) })
      assert.equal(r.statusCode, 200, r.body)
      const body = r.json<{ notes: Array<{ id: number }>, nextCursor: number | null }>()
      pages.push(body.notes.length)
      ids.push(...body.notes.map((n) => n.id))
      cursor = body.nextCursor
    } while (cursor !== null && pages.length < 10)
    assert.deepEqual(pages, [100, 100, 30])
    assert.equal(new Set(ids).size, 230)
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first across pages')
    // Exactly a page left: no cursor to an empty page.
    const exact = await app.inject({ method: 'GET', url: `/notes?limit=30&cursor=${ids[199] ?? 0}`, headers: bearer(token) })
    assert.deepEqual({ n: exact.json<{ notes: unknown[] }>().notes.length, next: exact.json<{ nextCursor: unknown }>().nextCursor }, { n: 30, next: null })
    const bad = await app.inject({ method: 'GET', url: '/notes?cursor=abc', headers: bearer(token) })
    assert.equal(bad.statusCode, 400)
    assert.match(bad.json<{ message: string }>().message, /querystring\/cursor must be integer/)
  })
})
