import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { makeApp, listen, RawClient, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

test('a handler that never ends is cut at the deadline: 503 + Retry-After if nothing was sent, reset if streaming; close resolves; the log says so', async (t) => {
  const lateDone = deferred()
  const { app, logs } = await makeApp({ timeout: 1000, linger: 50, retryAfter: 3 }, (app) => {
    app.get('/hang', () => new Promise(() => {}))
    app.get('/stream', (_request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('partial')
    })
    app.get('/late', async () => {
      await sleep(1600)
      setImmediate(() => lateDone.resolve())
      return 'too late'
    })
  })
  t.after(() => app.close())
  const port = await listen(app)
  const hang = await RawClient.connect(port)
  const stream = await RawClient.connect(port)
  const late = await RawClient.connect(port)
  t.after(() => { hang.socket.destroy(); stream.socket.destroy(); late.socket.destroy() })

  const hung = hang.request('/hang')
  const lateRes = late.request('/late')
  stream.socket.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
  await waitFor(() => app.drain.inFlight === 3, 'three requests in flight', 5000, 5)

  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  assert.ok(took >= 950 && took < 2500, `close took ${took} ms with a 1000 ms deadline`)

  const res = await hung
  assert.equal(res.status, 503)
  assert.equal(res.headers['retry-after'], '3')
  assert.equal(res.headers.connection, 'close')
  assert.equal((await lateRes).status, 503)
  await Promise.all([hang.closed, stream.closed, late.closed])
  assert.equal(app.drain.rejected, 2)
  assert.equal(app.drain.destroyed, 1)
  assert.equal(app.drain.inFlight, 0)

  const cut = logs.find((l) => l.msg.includes('deadline'))
  assert.ok(cut, 'a deadline log line')
  assert.equal(cut.level, 50)
  assert.equal(cut.requests, 3)
  assert.deepEqual(cut.routes, { 'GET /hang': 1, 'GET /late': 1, 'GET /stream': 1 })

  // The late handler still replies after its 503: Fastify must only warn, not crash.
  await lateDone.promise
  assert.ok(logs.some((l) => l.level === 40 && /already sent/i.test(JSON.stringify(l))), 'Fastify warned the reply was already sent')
})
