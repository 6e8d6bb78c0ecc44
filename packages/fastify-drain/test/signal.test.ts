import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest, Agent } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { once } from 'node:events'
import { makeApp, listen, RawClient, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

const FAR = 20_000 // a deadline far enough that reaching it would be the failure

test('an SSE stream sees request.drainSignal abort and ends cleanly; close resolves', async (t) => {
  const { app } = await makeApp({ timeout: FAR }, (app) => {
    app.get('/sse', (request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      reply.raw.write('data: hello\n\n')
      const timer = setInterval(() => reply.raw.write('data: tick\n\n'), 20)
      request.drainSignal.addEventListener('abort', () => {
        clearInterval(timer)
        reply.raw.end('event: bye\ndata: draining\n\n')
      }, { once: true })
    })
  })
  t.after(() => app.close())
  const port = await listen(app)
  const agent = new Agent({ keepAlive: true })
  t.after(() => agent.destroy())

  const req = httpRequest({ host: '127.0.0.1', port, path: '/sse', agent })
  req.end()
  const [res] = await once(req, 'response') as [import('node:http').IncomingMessage]
  assert.equal(res.statusCode, 200)
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => { body += chunk })
  const ended = once(res, 'end')
  await waitFor(() => body.includes('tick'), 'a tick', 5000, 5)

  const started = Date.now()
  await app.close()
  await ended
  assert.ok(Date.now() - started < FAR, 'close did not wait for the deadline')
  assert.match(body, /event: bye\ndata: draining\n\n$/)
  assert.equal(app.drain.destroyed, 0)
  assert.equal(app.drain.signal.aborted, true)
})

test('upgraded sockets: closed by their handler on the signal, or destroyed at the deadline', async (t) => {
  const { app } = await makeApp({ timeout: 2000 }, (app) => {
    app.server.on('upgrade', (req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n')
      if (req.url === '/polite') app.drain.signal.addEventListener('abort', () => socket.end('bye'), { once: true })
    })
  })
  t.after(() => app.close())
  const port = await listen(app)
  const polite = await RawClient.connect(port)
  const rude = await RawClient.connect(port)
  t.after(() => { polite.socket.destroy(); rude.socket.destroy() })
  let politeData = ''
  polite.socket.on('data', (chunk: string) => { politeData += chunk })
  let rudeData = ''
  rude.socket.on('data', (chunk: string) => { rudeData += chunk })
  polite.socket.write('GET /polite HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
  rude.socket.write('GET /rude HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
  await waitFor(() => politeData.includes('101') && rudeData.includes('101'), 'both upgrades', 5000, 5)

  const started = Date.now()
  await app.close()
  await polite.closed
  assert.ok(politeData.endsWith('bye'), 'the polite socket was ended by its handler on the signal')
  await rude.closed
  assert.ok(polite.closedAt < rude.closedAt, 'the polite socket closed before the deadline cut the rude one')
  assert.ok(rude.closedAt - started >= 2000 - 5, 'the upgraded socket that ignores the signal lives until the 2000 ms deadline')
  assert.equal(app.drain.destroyed, 1)
})

test('HTTP/2: the session gets GOAWAY, an in-flight stream completes, close resolves', async (t) => {
  const entered = deferred()
  const release = deferred()
  const { app } = await makeApp({ timeout: FAR }, (app) => {
    app.get('/slow', async () => { entered.resolve(); await release.promise; return 'slow' })
  }, { http2: true })
  t.after(() => app.close())
  const port = await listen(app)
  const session = h2connect(`http://127.0.0.1:${port}`)
  t.after(() => session.destroy())
  session.on('error', () => {})
  const goaway = once(session, 'goaway')

  const get = (path: string): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let status = 0
    let body = ''
    stream.setEncoding('utf8')
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (c: string) => { body += c })
    stream.on('end', () => resolve({ status, body }))
    stream.on('error', reject)
  })
  assert.equal((await get('/')).status, 200)
  const slow = get('/slow')
  await entered.promise
  const started = Date.now()
  const closing = app.close()
  await goaway
  release.resolve()
  assert.deepEqual(await slow, { status: 200, body: 'slow' })
  await closing
  assert.ok(Date.now() - started < FAR, 'closed once the stream ended, not at the deadline')
  assert.equal(app.drain.destroyed, 0)
})
