import { test } from 'node:test'
import assert from 'node:assert/strict'
import { makeApp, listen, RawClient, tryConnect } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

async function getOnce (port: number, path: string): Promise<{ status: number, headers: Record<string, string>, body: string }> {
  const client = await RawClient.connect(port)
  try {
    return await client.request(path)
  } finally {
    client.socket.destroy()
  }
}

test('with delay, readiness turns 503 at once while the listener keeps serving, then the listener closes', async (t) => {
  const { app } = await makeApp({ delay: 600, readiness: { path: '/ready' } })
  t.after(() => app.close())
  const port = await listen(app)

  const ready = await getOnce(port, '/ready')
  assert.equal(ready.status, 200)
  assert.deepEqual(JSON.parse(ready.body), { status: 'ready' })

  const started = Date.now()
  const closing = app.drainAndClose() // a default app: with app.close() Fastify would 503 during the delay
  await waitFor(() => app.drain.draining, 'draining', 5000, 5)
  assert.equal(app.drain.phase, 'delaying')

  const notReady = await getOnce(port, '/ready')
  const notReadyAt = Date.now()
  assert.equal(notReady.status, 503)
  assert.deepEqual(JSON.parse(notReady.body), { status: 'draining' })
  assert.equal(notReady.headers['retry-after'], '1')
  assert.equal(app.server.listening, true, 'listener still open during the delay')

  // During the delay a new connection is still served (the load balancer may not know yet).
  const served = await getOnce(port, '/')
  assert.equal(served.status, 200)
  assert.equal(served.headers.connection, 'close')

  await waitFor(() => !app.server.listening, 'the listener to close', 5000, 5)
  const stoppedAt = Date.now()
  assert.ok(notReadyAt < stoppedAt)
  assert.ok(stoppedAt - started >= 550, `listener closed ${stoppedAt - started} ms after close() with delay 600`)
  await closing
  assert.equal(await tryConnect(port), 'ECONNREFUSED')
  assert.equal(app.drain.rejected, 0)
})

test('without readiness option no route is added; fastify.drain.draining is there for the app\'s own /health', async (t) => {
  const { app } = await makeApp({}, (app) => {
    app.get('/health', async (_req, reply) => app.drain.draining ? reply.code(503).send('draining') : 'ok')
  })
  t.after(() => app.close())
  await app.ready()
  assert.equal(app.hasRoute({ method: 'GET', url: '/ready' }), false)
  assert.equal((await app.inject('/health')).body, 'ok')
})
