// README promises about responses that span the start of a drain, and HTTP/2 sessions at the deadline.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest, Agent, type IncomingMessage } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { once } from 'node:events'
import { makeApp, listen, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

const FAR = 20_000 // a deadline far enough that reaching it would be the failure

test('a response already streaming when the drain starts ends as its handler decides; its socket then gets the linger', async (t) => {
  const linger = 300
  const finish = deferred()
  const { app } = await makeApp({ linger, timeout: FAR }, (app) => {
    app.get('/stream', (_request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('before;')
      void finish.promise.then(() => reply.raw.end('after'))
    })
  })
  t.after(() => { finish.resolve(); return app.close() })
  const port = await listen(app)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.after(() => agent.destroy())

  const req = httpRequest({ host: '127.0.0.1', port, path: '/stream', agent })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  assert.equal(res.headers.connection, 'keep-alive', 'headers were sent before the drain, with keep-alive')
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (c: string) => { body += c })
  const ended = once(res, 'end')
  await waitFor(() => body === 'before;', 'the first chunk')
  const socket = req.socket
  assert.ok(socket !== null)
  const socketClosed = once(socket, 'close')

  const closing = app.close()
  await waitFor(() => app.drain.phase === 'draining', 'draining', 5000, 5)
  assert.equal(body, 'before;', 'the stream is not cut when the drain starts')
  finish.resolve()
  await ended
  // The agent unrefs a socket it takes back: keep this one counted, or the loop may end before its close.
  socket.ref()
  const endedAt = Date.now()
  assert.equal(body, 'before;after', 'the handler ended it')
  await socketClosed
  assert.ok(Date.now() - endedAt >= linger - 20, `its socket lingered ${Date.now() - endedAt} ms after the response (linger ${linger} ms)`)
  await closing
  assert.equal(app.drain.destroyed, 0, 'nothing was cut')
  assert.equal(app.drain.rejected, 0)
})

test('HTTP/2: a session whose stream outlives the deadline is destroyed at it; close resolves at the deadline', async (t) => {
  const timeout = 1500
  const entered = deferred()
  const { app } = await makeApp({ timeout }, (app) => {
    // A stream that started its response and never ends it.
    app.get('/hang', (_request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('partial')
      entered.resolve()
    })
  }, { http2: true })
  t.after(() => app.close())
  const port = await listen(app)
  const session = h2connect(`http://127.0.0.1:${port}`)
  t.after(() => session.destroy())
  session.on('error', () => {})
  const sessionClosed = once(session, 'close')
  const stream = session.request({ ':path': '/hang' })
  stream.on('error', () => {})
  let status = 0
  stream.on('response', (h) => { status = Number(h[':status']) })
  const streamClosed = once(stream, 'close')
  await entered.promise

  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  await Promise.all([sessionClosed, streamClosed])
  assert.ok(took >= timeout - 5, `close took ${took} ms: not before the ${timeout} ms deadline`)
  assert.equal(status, 200, 'the response had started')
  assert.equal(app.drain.destroyed, 1, 'the session was destroyed at the deadline')
  assert.equal(app.drain.rejected, 0)
})
