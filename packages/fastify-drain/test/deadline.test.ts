import { test } from 'node:test'
import assert from 'node:assert/strict'
import { makeApp, listen, RawClient, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

test('a handler that never ends is cut at the deadline: 503 + Retry-After if nothing was sent, reset if streaming; close resolves; the log says so', async (t) => {
  const lateDone = deferred()
  const lateRelease = deferred()
  const timeout = 1000
  const { app, logs } = await makeApp({ timeout, linger: 50, retryAfter: 3 }, (app) => {
    app.get('/hang', () => new Promise(() => {}))
    app.get('/stream', (_request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('partial')
    })
    app.get('/late', async () => {
      await lateRelease.promise // released by the test once close() resolved: it ends after the deadline
      setImmediate(() => lateDone.resolve())
      return 'too late'
    })
  })
  t.after(() => { lateRelease.resolve(); return app.close() })
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
  assert.ok(took >= timeout - 5, `close took ${took} ms: before its ${timeout} ms deadline, with three handlers still running`)
  // The 503s get at most 200 ms to flush; the rest is scheduling slack on a loaded machine. What this
  // tells apart is "resolved at the deadline" from "waited for the handlers" (which never end).
  assert.ok(took < timeout + 200 + 10_000, `close took ${took} ms with a ${timeout} ms deadline`)

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
  lateRelease.resolve()
  await lateDone.promise
  assert.ok(logs.some((l) => l.level === 40 && /already sent/i.test(JSON.stringify(l))), 'Fastify warned the reply was already sent')
})
