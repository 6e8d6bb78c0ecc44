import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { makeApp, listen, RawClient, tryConnect, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

test('close with one idle keep-alive socket resolves well under a second and closes the socket', async (t) => {
  const { app } = await makeApp()
  t.after(() => app.close())
  const port = await listen(app)
  const client = await RawClient.connect(port)
  t.after(() => client.socket.destroy())

  const res = await client.request('/')
  assert.equal(res.status, 200)
  assert.equal(res.headers.connection, 'keep-alive')

  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  await client.closed
  assert.ok(took < 900, `close took ${took} ms`)
  assert.ok(client.closedAt - started < 900, 'the idle socket was closed by the drain')
  assert.equal(app.drain.idleClosed, 1)
  assert.equal(app.drain.destroyed, 0)
  assert.equal(app.drain.phase, 'closed')
  assert.equal(await tryConnect(port), 'ECONNREFUSED')
})

test('an idle socket is closed once linger has passed since draining started, not at once', async (t) => {
  const { app } = await makeApp({ linger: 400 })
  t.after(() => app.close())
  const port = await listen(app)
  const client = await RawClient.connect(port)
  t.after(() => client.socket.destroy())
  assert.equal((await client.request('/')).status, 200)

  const started = Date.now()
  await app.close()
  await client.closed
  const after = client.closedAt - started
  assert.ok(after >= 380 && after < 1200, `idle socket closed ${after} ms after close() with linger 400`)
  assert.equal(app.drain.idleClosed, 1)
})

test('inFlight counts requests in flight before and during the drain', async (t) => {
  const entered = deferred()
  const release = deferred()
  const { app } = await makeApp({}, (app) => {
    app.get('/hold', async () => { entered.resolve(); await release.promise; return 'held' })
  })
  t.after(() => app.close())
  const port = await listen(app)
  const client = await RawClient.connect(port)
  const idle = await RawClient.connect(port)
  t.after(() => { client.socket.destroy(); idle.socket.destroy() })
  await idle.request('/')
  assert.equal(app.drain.inFlight, 0)
  const held = client.request('/hold')
  await entered.promise
  assert.equal(app.drain.inFlight, 1)
  const closing = app.close()
  await waitFor(() => app.drain.phase === 'draining', 'draining', 5000, 5)
  assert.equal(app.drain.inFlight, 1)
  release.resolve()
  assert.equal((await held).headers.connection, 'close')
  await closing
  assert.equal(app.drain.inFlight, 0)
})

test('an in-flight 1 s request completes with 200 and Connection: close, its socket closed right after', async (t) => {
  const entered = deferred()
  const { app } = await makeApp({}, (app) => {
    app.get('/slow', async () => {
      entered.resolve()
      await sleep(1000)
      return { slow: true }
    })
  })
  t.after(() => app.close())
  const port = await listen(app)
  const client = await RawClient.connect(port)
  t.after(() => client.socket.destroy())

  const pending = client.request('/slow')
  await entered.promise
  assert.equal(app.drain.inFlight, 1)
  const closing = app.close()
  const res = await pending
  const answeredAt = Date.now()
  assert.equal(res.status, 200)
  assert.equal(res.body, '{"slow":true}')
  assert.equal(res.headers.connection, 'close')
  await client.closed
  assert.ok(client.closedAt - answeredAt < 500, `socket closed ${client.closedAt - answeredAt} ms after the response`)
  await closing
  assert.equal(app.drain.inFlight, 0)
  assert.equal(app.drain.rejected, 0)
  assert.equal(app.drain.destroyed, 0)
})

/**
 * A request arriving on a kept-alive socket while an in-flight one holds the drain open: what the
 * client gets depends on how the close was asked for and on the app's return503OnClosing.
 */
const lateRequestCases = [
  { name: 'default app, drainAndClose()', server: {}, close: 'drainAndClose', status: 200 },
  { name: 'app with return503OnClosing: false, close()', server: { return503OnClosing: false }, close: 'close', status: 200 },
  // Fastify flags itself closing before the drain's preClose hook; its router then answers 503.
  { name: 'default app, close() (Fastify answers 503)', server: {}, close: 'close', status: 503 }
] as const

for (const c of lateRequestCases) {
  test(`${c.name}: a request arriving on a kept-alive socket during the drain gets ${c.status} with Connection: close; new connections are refused; the in-flight one ends 200`, async (t) => {
    const entered = deferred()
    const release = deferred()
    const { app } = await makeApp({ linger: 5000, timeout: 20_000 }, (app) => {
      app.get('/hold', async () => { entered.resolve(); await release.promise; return 'held' })
    }, c.server)
    t.after(() => { release.resolve(); return app.close() })
    const port = await listen(app)
    const holder = await RawClient.connect(port)
    const kept = await RawClient.connect(port)
    t.after(() => { holder.socket.destroy(); kept.socket.destroy() })

    assert.equal((await kept.request('/')).headers.connection, 'keep-alive')
    const held = holder.request('/hold')
    await entered.promise

    const closing = c.close === 'drainAndClose' ? app.drainAndClose() : app.close()
    await waitFor(() => !app.server.listening, 'the listener to stop', 5000, 5)
    assert.equal(app.drain.draining, true)
    assert.equal(await tryConnect(port), 'ECONNREFUSED')

    const res = await kept.request('/')
    assert.equal(res.status, c.status)
    if (c.status === 200) assert.equal(res.body, '{"hello":"world"}')
    else assert.equal(JSON.parse(res.body).statusCode, 503)
    assert.equal(res.headers.connection, 'close')
    await kept.closed

    release.resolve()
    const last = await held
    assert.equal(last.status, 200)
    assert.equal(last.body, 'held')
    assert.equal(last.headers.connection, 'close')
    await closing
    assert.equal(app.drain.rejected, 0) // Fastify's own 503s are not the plugin's
  })
}

test('drainAndClose() runs onClose hooks after the drain, once, and joins a second call', async () => {
  const order: string[] = []
  const { app } = await makeApp()
  app.addHook('preClose', async () => { order.push(`preClose draining=${String(app.drain.draining)}`) })
  app.addHook('onClose', async () => { order.push(`onClose phase=${app.drain.phase}`) })
  await listen(app)
  const first = app.drainAndClose()
  const second = app.drainAndClose()
  assert.equal(first, second)
  await first
  assert.deepEqual(order, ['preClose draining=true', 'onClose phase=closed'])
  assert.equal(app.server.listening, false)
})

test('close on an app that never listened resolves', async () => {
  const { app } = await makeApp()
  await app.ready()
  assert.equal(app.drain.draining, false)
  const res = await app.inject('/')
  assert.equal(res.statusCode, 200)
  await app.close()
  assert.equal(app.drain.phase, 'closed')
})
