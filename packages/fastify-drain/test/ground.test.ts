// What Fastify 5 does on close without the plugin: the facts the plugin is built on.
// If one of these starts failing after a Fastify upgrade, re-read lib/route.js and fastify.js.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { listen, RawClient, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

test('ground: Fastify is already "closing" in preClose and, by default, answers 503 to a request on an open socket', async (t) => {
  const inPreClose = deferred()
  const release = deferred()
  const app = Fastify()
  app.get('/', async () => 'ok')
  app.addHook('preClose', async () => { inPreClose.resolve(); await release.promise })
  t.after(() => { release.resolve(); return app.close() })
  const port = await listen(app)
  const client = await RawClient.connect(port)
  t.after(() => client.socket.destroy())
  assert.equal((await client.request('/')).status, 200)

  const closing = app.close()
  await inPreClose.promise
  const res = await client.request('/')
  assert.equal(res.status, 503)
  assert.equal(res.headers.connection, 'close')
  release.resolve()
  await closing
})

test('ground: without the plugin an in-flight response says keep-alive and close() waits for the keep-alive timeout', async (t) => {
  const entered = deferred()
  const release = deferred()
  const app = Fastify({ return503OnClosing: false, keepAliveTimeout: 1500 })
  app.get('/slow', async () => { entered.resolve(); await release.promise; return 'slow' })
  t.after(() => { release.resolve(); return app.close() }) // a failed assertion must not leave the handler holding close()
  const port = await listen(app)
  const client = await RawClient.connect(port)
  t.after(() => client.socket.destroy())

  const pending = client.request('/slow')
  await entered.promise
  const started = Date.now()
  const closing = app.close()
  // Release the handler only once Fastify's server.close() ran, so the close waits on an in-flight request.
  await waitFor(() => !app.server.listening, 'the listener to stop', 5000, 5)
  release.resolve()
  const res = await pending
  assert.equal(res.status, 200)
  assert.equal(res.headers.connection, 'keep-alive')
  await closing
  const took = Date.now() - started
  assert.ok(took >= 1400, `close took ${took} ms: it waited for keepAliveTimeout (1500 ms)`)
})
