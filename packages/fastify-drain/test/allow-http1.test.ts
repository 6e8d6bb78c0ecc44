import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { connect as h2connect } from 'node:http2'
import { once } from 'node:events'
import { makeApp, listen, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

const fixtures = new URL('./fixtures/', import.meta.url)
const key = readFileSync(new URL('key.pem', fixtures))
const cert = readFileSync(new URL('cert.pem', fixtures))

test('http2 + allowHTTP1: HTTP/1.1 sockets on the h2 port are drained like HTTP/1 ones (Connection: close, idle closed), beside a GOAWAY for h2', async (t) => {
  const entered = deferred()
  const release = deferred()
  const timeout = 20_000 // far: reaching it would be the failure
  const { app } = await makeApp({ timeout }, (app) => {
    app.get('/slow', async () => { entered.resolve(); await release.promise; return 'slow' })
  }, { http2: true, https: { allowHTTP1: true, key, cert } })
  t.after(() => app.close())
  const port = await listen(app)

  const open = async (): Promise<{ socket: import('node:tls').TLSSocket, data: () => string, closed: Promise<unknown> }> => {
    const socket = connect({ host: '127.0.0.1', port, ca: cert, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    await once(socket, 'secureConnect')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (c: string) => { data += c })
    return { socket, data: () => data, closed: once(socket, 'close') }
  }
  const busy = await open()
  const idle = await open()
  const h2 = h2connect(`https://127.0.0.1:${port}`, { ca: cert, rejectUnauthorized: false })
  h2.on('error', () => {})
  t.after(() => { busy.socket.destroy(); idle.socket.destroy(); h2.destroy() })
  const h2res = h2.request({ ':path': '/' })
  h2res.resume()
  await once(h2res, 'end')
  idle.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  busy.socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  await entered.promise
  await waitFor(() => idle.data().endsWith('{"hello":"world"}'), 'the idle socket\'s response', 5000, 5)

  const started = Date.now()
  const goaway = once(h2, 'goaway')
  const closing = app.close()
  await waitFor(() => app.drain.phase === 'draining', 'draining', 5000, 5)
  await goaway
  release.resolve()
  await closing
  await Promise.all([busy.closed, idle.closed])
  assert.ok(Date.now() - started < timeout / 2, 'closed when the request ended, not at the deadline')
  assert.match(busy.data(), /^HTTP\/1\.1 200 OK\r\n/)
  assert.match(busy.data(), /\r\nconnection: close\r\n/i, 'the in-flight HTTP/1.1 response says Connection: close')
  assert.match(busy.data(), /slow$/)
  assert.equal(app.drain.idleClosed, 1, 'the idle HTTP/1.1 socket was closed by the drain')
  assert.equal(app.drain.destroyed, 0)
})
