// End-to-end: the built server (`node dist/server.js`) with 2 workers under startClustered, against
// the real Postgres and Redis. Every request uses a fresh connection so consecutive requests can land
// on different workers; each cross-worker assertion checks that two distinct pids were involved.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { clusterEnv, countKeys, deleteKeys, dropSchema, isolation, query, signJwt } from './helpers.js'
import { freePort } from '../../../test/helpers/index.ts'
import { Server, request } from './cluster-harness.js'

const { schema, prefix } = isolation('cluster')
let server: Server
let port = 0
let metricsPort = 0

async function userToken (username: string): Promise<{ token: string, pid: number }> {
  const creds = { username, password: 'correct horse battery' }
  const r = await request(port, 'POST', '/users', { body: creds })
  assert.equal(r.status, 201, JSON.stringify(r.body))
  const l = await request<{ token: string }>(port, 'POST', '/login', { body: creds })
  assert.equal(l.status, 200, JSON.stringify(l.body))
  return { token: l.body.token, pid: l.pid }
}

before(async () => {
  port = await freePort()
  server = new Server(port, clusterEnv({ schema, prefix }, {
    METRICS_PORT: String(metricsPort = await freePort()),
    SHUTDOWN_TIMEOUT: '10000',
    DRAIN_DELAY: '3000'
  }))
  await server.start()
})

after(async () => {
  const code = await server?.stop()
  await dropSchema(schema)
  await deleteKeys(prefix)
  assert.equal(await countKeys(prefix), 0, 'no key left behind')
  assert.equal(code, 0, 'graceful shutdown exits 0')
})

test('migrations ran once, before any worker, in the primary\'s short-lived preflight process', async () => {
  const rows = await query<{ version: number, applied_by_pid: number }>(`SELECT version, applied_by_pid FROM "${schema}".schema_migrations ORDER BY version`)
  assert.deepEqual(rows.map((r) => r.version), [1, 2, 3])
  const logs = server.logs()
  const done = logs.filter((l) => l['msg'] === 'migrations done')
  assert.equal(done.length, 1, 'one preflight ran the migrations')
  const preflightPid = done[0]?.['pid']
  assert.equal(done[0]?.['role'], 'preflight')
  for (const r of rows) assert.equal(r.applied_by_pid, preflightPid, 'applied by the preflight process')
  assert.notEqual(preflightPid, server.pid, 'not in the primary: it never loads pg')
  const workerPids = logs.filter((l) => l['msg'] === 'worker forked').map((l) => l['workerPid'])
  assert.equal(workerPids.length, 2)
  assert.ok(!workerPids.includes(preflightPid), 'not in a worker')
  const firstFork = logs.findIndex((l) => l['msg'] === 'worker forked')
  assert.ok(logs.findIndex((l) => l['msg'] === 'migrations done') < firstFork, 'done before the first fork')
  const applied = logs.filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('applied migration'))
  assert.equal(applied.length, 3)
})

test('a token issued by one worker is accepted by the other', async () => {
  const { token, pid } = await userToken('alice')
  const other = await server.onOtherWorker<{ username: string, pid: number }>(pid, 'GET', '/whoami', { token })
  assert.equal(other.status, 200, JSON.stringify(other.body))
  assert.equal(other.body.username, 'alice')
  assert.notEqual(other.pid, pid, 'two distinct pids served the same token')
  assert.equal(other.body.pid, other.pid)
})

test('notes written through one worker are read through the other', async () => {
  const { token } = await userToken('bob')
  const created = await request<{ id: number }>(port, 'POST', '/notes', { token, body: { title: 'shared', body: 'nothing in memory' } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  const read = await server.onOtherWorker<{ title: string, body: string }>(created.pid, 'GET', `/notes/${created.body.id}`, { token })
  assert.equal(read.status, 200)
  assert.equal(read.body.body, 'nothing in memory')
  const list = await server.onOtherWorker<{ notes: Array<{ id: number }> }>(read.pid, 'GET', '/notes', { token })
  assert.deepEqual(list.body.notes.map((n) => n.id), [created.body.id])
  const del = await server.onOtherWorker(list.pid, 'DELETE', `/notes/${created.body.id}`, { token })
  assert.equal(del.status, 204)
  const gone = await server.onOtherWorker(del.pid, 'GET', `/notes/${created.body.id}`, { token })
  assert.equal(gone.status, 404)
})

test('the cart is seen by two consecutive requests served by different workers', async () => {
  const { token } = await userToken('carol')
  const add = await request(port, 'POST', '/cart/items', { token, body: { sku: 'tea', quantity: 2 } })
  assert.equal(add.status, 200)
  const seen = await server.onOtherWorker<{ items: unknown, pid: number }>(add.pid, 'GET', '/cart', { token })
  assert.deepEqual(seen.body.items, [{ sku: 'tea', quantity: 2 }])
  const more = await server.onOtherWorker(seen.pid, 'POST', '/cart/items', { token, body: { sku: 'tea', quantity: 1 } })
  assert.equal(more.status, 200)
  const again = await server.onOtherWorker<{ totalQuantity: number }>(more.pid, 'GET', '/cart', { token })
  assert.equal(again.body.totalQuantity, 3)
  assert.equal(new Set([add.pid, seen.pid, more.pid, again.pid]).size, 2)
})

test('concurrent cart additions through both workers lose nothing (atomic HINCRBY)', async () => {
  const { token } = await userToken('grace')
  const results = await Promise.all(Array.from({ length: 20 }, async () => await request(port, 'POST', '/cart/items', { token, body: { sku: 'pen' } })))
  assert.ok(results.every((r) => r.status === 200))
  assert.equal(new Set(results.map((r) => r.pid)).size, 2, 'both workers took part')
  const cart = await request<{ totalQuantity: number }>(port, 'GET', '/cart', { token })
  assert.equal(cart.body.totalQuantity, 20)
})

test('a revoked token is refused by every worker', async () => {
  const { token } = await userToken('dave')
  const out = await request(port, 'POST', '/logout', { token })
  assert.equal(out.status, 204)
  const statuses = await server.distinctPids('/whoami', 2, 60, { token })
  assert.equal(statuses.size, 2, 'both workers were asked')
  for (const [pid, status] of statuses) assert.equal(status, 401, `worker ${pid}`)
})

test('bad input: 400 with a clear message, 401 without a valid token, 413 for a huge body', async () => {
  const bad = await request<{ message: string }>(port, 'POST', '/users', { body: { username: 'x' } })
  assert.equal(bad.status, 400)
  assert.match(bad.body.message, /body must have required property 'password'|body\/username/)
  const noteWithoutTitle = await request<{ message: string }>(port, 'POST', '/notes', { token: (await userToken('erin')).token, body: { body: 'no title' } })
  assert.equal(noteWithoutTitle.status, 400)
  assert.match(noteWithoutTitle.body.message, /required property 'title'/)

  const missing = await request(port, 'GET', '/notes')
  assert.equal(missing.status, 401)
  const now = Math.floor(Date.now() / 1000)
  const forged = signJwt({ sub: '1', username: 'erin', jti: 'x', iat: now, exp: now + 60 }, 'not-the-server-secret-not-the-server-secret')
  const f = await request(port, 'GET', '/notes', { token: forged })
  assert.equal(f.status, 401)

  const huge = await request(port, 'POST', '/users', { raw: JSON.stringify({ username: 'huge', password: 'x'.repeat(200_000) }) })
  assert.equal(huge.status, 413)
})

test('health is 200 on both workers with a small fixed body; the pid and worker id are in the headers', async () => {
  const seen = new Map<number, number>()
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const r = await request(port, 'GET', '/health')
    assert.equal(r.status, 200)
    assert.deepEqual(r.body, { status: 'ok', checks: { postgres: { ok: true }, redis: { ok: true } } })
    seen.set(r.workerId, r.pid)
  }
  assert.deepEqual([...seen.keys()].sort(), [0, 1])
})

test('metrics: none on the app port; the primary serves one scrape labelled by pid', async () => {
  const own = await request<string>(port, 'GET', '/metrics')
  assert.equal(own.status, 404, 'a worker\'s /metrics is not public on the app port')
  const all = await request<string>(metricsPort, 'GET', '/metrics')
  assert.equal(all.status, 200)
  const [a, b] = [...(await server.distinctPids('/health', 2, 40)).keys()]
  assert.match(all.body, new RegExp(`pid="${a}"`))
  assert.match(all.body, new RegExp(`pid="${b}"`))
  assert.match(all.body, /http_requests_total\{[^}]*route="\/notes\/:id"/, 'route metrics use the route pattern')
})

// Last: it shuts the cluster down.
test('on SIGTERM both workers answer /health 503 "draining" during DRAIN_DELAY, then the cluster exits 0', async () => {
  server.signal('SIGTERM')
  const draining = new Set<number>()
  const deadline = Date.now() + 2500 // inside the 3 s delay, while the listeners still accept
  while (draining.size < 2 && Date.now() < deadline) {
    const r = await request<{ status: string }>(port, 'GET', '/health').catch(() => undefined)
    if (r?.status === 503 && r.body.status === 'draining') draining.add(r.pid)
  }
  assert.equal(draining.size, 2, 'both workers reported draining')
  assert.equal(await server.stop(), 0)
})
