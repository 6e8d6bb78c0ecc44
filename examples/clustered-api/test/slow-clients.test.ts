// Slowloris against the built server with 2 workers: clients trickling a body or their headers a byte
// at a time over real sockets. Each is cut after REQUEST_TIMEOUT, so neither a rolling reload (SIGHUP)
// nor a shutdown (SIGTERM) waits for the drain deadline (about SHUTDOWN_TIMEOUT, 30 s here).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { clusterEnv, deleteKeys, dropSchema, isolation } from './helpers.js'
import { freePort, waitFor } from '../../../test/helpers/index.ts'
import { Server, request } from './cluster-harness.js'

const { schema, prefix } = isolation('slow')
const REQUEST_TIMEOUT = 3000
let server: Server
let port = 0

interface Trickler { kind: 'body' | 'headers', closed: Promise<{ ms: number, response: string }>, connected: Promise<void> }

/** Open a socket and send one byte every 200 ms, forever: the request never completes by itself. */
function trickle (kind: 'body' | 'headers'): Trickler {
  const started = Date.now()
  const socket = net.connect(port, '127.0.0.1')
  let response = ''
  let timer: NodeJS.Timeout | undefined
  socket.setEncoding('utf8').on('data', (d: string) => { response += d })
  socket.on('error', () => {})
  const connected = new Promise<void>((resolve) => socket.once('connect', () => {
    socket.write(kind === 'body'
      ? 'POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{'
      : 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ')
    timer = setInterval(() => { if (!socket.destroyed) socket.write(kind === 'body' ? ' ' : 'a') }, 200)
    resolve()
  }))
  const closed = new Promise<{ ms: number, response: string }>((resolve) => socket.once('close', () => {
    clearInterval(timer)
    resolve({ ms: Date.now() - started, response })
  }))
  return { kind, closed, connected }
}

const tricklers = (): Trickler[] => [trickle('body'), trickle('headers'), trickle('body'), trickle('headers')]

before(async () => {
  port = await freePort()
  server = new Server(port, clusterEnv({ schema, prefix }, {
    SHUTDOWN_TIMEOUT: '30000',
    REQUEST_TIMEOUT: String(REQUEST_TIMEOUT)
  }))
  await server.start()
})

after(async () => {
  await server?.stop()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

test('a trickled body gets 408 and a trickled header block is closed, both after REQUEST_TIMEOUT', async () => {
  const [body, headers] = [trickle('body'), trickle('headers')]
  const [b, h] = await Promise.all([body.closed, headers.closed])
  for (const [name, r] of [['body', b], ['headers', h]] as const) {
    assert.ok(r.ms >= REQUEST_TIMEOUT - 100, `${name}: not cut before its timeout (${r.ms} ms)`)
    assert.ok(r.ms < REQUEST_TIMEOUT + 5000, `${name}: cut ${r.ms} ms after connecting`)
    assert.match(r.response, /^HTTP\/1\.1 408 /, `${name}: ${r.response}`)
  }
  // The workers serve on as if nothing happened.
  assert.equal((await request(port, 'GET', '/health')).status, 200)
})

test('slowloris clients do not hold a rolling reload (SIGHUP) past their timeout', async () => {
  const before = server.logs().length
  const t0 = Date.now()
  const clients = tricklers()
  await Promise.all(clients.map(async (c) => await c.connected))
  server.signal('SIGHUP')
  const done = await waitFor(() => server.logs().slice(before).find((l) => /^rolling reload (done|failed)/.test(String(l['msg']))),
    'the rolling reload to end', 60000, 100)
  const ms = Date.now() - t0
  assert.deepEqual([done['ok'], done['replaced']], [true, 2], 'the reload replaced both workers')
  const deadlines = server.logs().slice(before).filter((l) => /deadline/.test(String(l['msg'])))
  assert.deepEqual(deadlines.map((l) => l['msg']), [], 'no drain ran into its deadline')
  // Without REQUEST_TIMEOUT each old worker would wait for its drain deadline (27 s) with a trickler in flight.
  assert.ok(ms < 25000, `reload took ${ms} ms`)
  for (const r of await Promise.all(clients.map(async (c) => await c.closed))) assert.ok(r.ms < REQUEST_TIMEOUT + 5000, `a trickler lived ${r.ms} ms`)
  await waitFor(async () => (await server.distinctPids('/health', 2, 8)).size === 2, 'the new workers answering', 30000, 200)
})

// Last: it shuts the cluster down.
test('slowloris clients do not hold a shutdown (SIGTERM) past their timeout', async () => {
  const before = server.logs().length
  const clients = tricklers()
  await Promise.all(clients.map(async (c) => await c.connected))
  const t0 = Date.now()
  const code = await server.stop()
  const ms = Date.now() - t0
  assert.equal(code, 0, 'clean exit, nobody SIGKILLed')
  assert.ok(ms < REQUEST_TIMEOUT + 8000, `shutdown took ${ms} ms (drain deadline: 27 s)`)
  const deadlines = server.logs().slice(before).filter((l) => /deadline/.test(String(l['msg'])))
  assert.deepEqual(deadlines.map((l) => l['msg']), [])
  for (const r of await Promise.all(clients.map(async (c) => await c.closed))) assert.ok(r.ms < REQUEST_TIMEOUT + 8000, `a trickler lived ${r.ms} ms`)
})
