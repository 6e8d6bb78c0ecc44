import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import websocket from '@fastify/websocket'
import WebSocket, { WebSocketServer } from 'ws'
import { makeApp, listen } from './helpers.js'

const FAR = 20_000 // a deadline far enough that reaching it would be the failure

interface Client { ws: WebSocket, messages: string[], closed: Promise<{ code: number, reason: string, at: number }> }

async function connectClient (url: string): Promise<Client> {
  const ws = new WebSocket(url)
  const messages: string[] = []
  ws.on('message', (data: Buffer) => { messages.push(data.toString()) })
  ws.on('error', () => {}) // a terminated socket is an outcome the test reads from 'close'
  const closed = once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason), at: Date.now() }))
  await once(ws, 'open')
  return { ws, messages, closed }
}

/** Send and wait for the echo, so the test knows the connection is up end to end. */
async function roundTrip (c: Client, text: string): Promise<void> {
  const n = c.messages.length
  c.ws.send(text)
  while (c.messages.length === n) await once(c.ws, 'message')
  assert.equal(c.messages.at(-1), `echo:${text}`)
}

async function echoApp (drain: Record<string, unknown>, takeOver = false): Promise<Awaited<ReturnType<typeof makeApp>>> {
  return await makeApp({ timeout: FAR, ...drain }, (app) => {
    void app.register(websocket)
    void app.register(async (scope) => {
      scope.get('/ws', { websocket: true }, (socket, req) => {
        socket.on('message', (data: Buffer) => socket.send(`echo:${data.toString()}`))
        if (takeOver) {
          // The app's own goodbye: sent before the drain's close frame, and its own code.
          req.drainSignal.addEventListener('abort', () => {
            socket.send('bye: reconnect in a moment')
            socket.close(4000, 'app goodbye')
          }, { once: true })
        }
      })
    })
  })
}

test('@fastify/websocket: drainAndClose({ restart: true }) sends every client 1012 at once and ends with the handshakes, not the deadline', async (t) => {
  const { app, logs } = await echoApp({ websocketGrace: 10_000 })
  t.after(() => app.close())
  const port = await listen(app)
  const clients = await Promise.all(Array.from({ length: 20 }, async () => await connectClient(`ws://127.0.0.1:${port}/ws`)))
  t.after(() => { for (const c of clients) c.ws.terminate() })
  await Promise.all(clients.map(async (c, i) => { await roundTrip(c, `hello ${i}`) }))

  const started = Date.now()
  await app.drainAndClose({ restart: true })
  const took = Date.now() - started
  const closes = await Promise.all(clients.map(async (c) => await c.closed))

  assert.deepEqual(closes.map((c) => c.code), clients.map(() => 1012), 'every client got 1012 (service restart)')
  assert.equal(closes[0]?.reason, 'server restarting')
  assert.equal(app.drain.webSockets, 20)
  assert.equal(app.drain.restart, true)
  assert.equal(app.drain.destroyed, 0, 'nothing was cut at the deadline')
  assert.equal(logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('terminated')).length, 0, 'every closing handshake finished')
  assert.ok(took < 5_000, `close took ${took} ms: the closing handshakes, not the 10 s grace nor the 20 s deadline`)
  assert.ok(logs.some((l) => l.msg === 'drain: closing 20 WebSocket(s) with 1012'))
})

test('a plain ws WebSocketServer on app.server: app.close() sends 1001 (going away)', async (t) => {
  const { app } = await makeApp({ timeout: FAR })
  const wss = new WebSocketServer({ server: app.server })
  wss.on('connection', (socket) => { socket.on('message', (data: Buffer) => socket.send(`echo:${data.toString()}`)) })
  t.after(() => { wss.close(); return app.close() })
  const port = await listen(app)
  const clients = await Promise.all(Array.from({ length: 5 }, async () => await connectClient(`ws://127.0.0.1:${port}/`)))
  t.after(() => { for (const c of clients) c.ws.terminate() })
  await Promise.all(clients.map(async (c, i) => { await roundTrip(c, `hi ${i}`) }))

  const started = Date.now()
  await app.close()
  const closes = await Promise.all(clients.map(async (c) => await c.closed))
  assert.deepEqual(closes.map((c) => c.code), clients.map(() => 1001))
  assert.equal(app.drain.webSockets, 5)
  assert.ok(Date.now() - started < 5_000)
})

test('a client that never answers the close frame is terminated after websocketGrace, with a log line, long before the deadline', async (t) => {
  const { app, logs } = await echoApp({ websocketGrace: 300 })
  t.after(() => app.close())
  const port = await listen(app)
  const polite = await connectClient(`ws://127.0.0.1:${port}/ws`)
  const deaf = await connectClient(`ws://127.0.0.1:${port}/ws`)
  t.after(() => { polite.ws.terminate(); deaf.ws.terminate() })
  await roundTrip(polite, 'a')
  await roundTrip(deaf, 'b')
  deaf.ws.pause() // reads nothing more: never sees the close frame, never answers it

  const started = Date.now()
  await app.drainAndClose()
  const took = Date.now() - started
  assert.equal((await polite.closed).code, 1001)
  deaf.ws.resume() // now it reads the close frame the server sent before terminating, and the end
  assert.ok([1001, 1006].includes((await deaf.closed).code))
  assert.ok(took >= 250 && took < 5_000, `close took ${took} ms (grace 300 ms, deadline 20 s)`)
  const line = logs.find((l) => typeof l.msg === 'string' && l.msg.includes('did not finish the closing handshake'))
  assert.ok(line !== undefined, 'a log line says a WebSocket was terminated')
  assert.equal(line.terminated, 1)
})

test('an app takes over on drainSignal: its goodbye message and its own close code reach the client first', async (t) => {
  const { app } = await echoApp({}, true)
  t.after(() => app.close())
  const port = await listen(app)
  const c = await connectClient(`ws://127.0.0.1:${port}/ws`)
  t.after(() => c.ws.terminate())
  await roundTrip(c, 'x')
  await app.drainAndClose({ restart: true })
  const closed = await c.closed
  assert.equal(closed.code, 4000)
  assert.equal(closed.reason, 'app goodbye')
  assert.equal(c.messages.at(-1), 'bye: reconnect in a moment')
  assert.equal(app.drain.webSockets, 1, 'the drain still waited for its handshake')
})

test('websocketGrace is validated', async () => {
  const { resolveOptions } = await import('../src/options.js')
  assert.throws(() => resolveOptions({ websocketGrace: -1 }), /option websocketGrace must be an integer number of ms from 0 to 2147483647, got -1$/)
  assert.throws(() => resolveOptions({ websocketGrace: '1s' }), /option websocketGrace must be .*, got "1s"$/)
  assert.equal(resolveOptions({}).websocketGrace, 1000)
})
