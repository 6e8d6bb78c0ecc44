import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { createConnection, createServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { makeApp, listen, deferred } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

const fixtures = new URL('./fixtures/', import.meta.url)
const key = readFileSync(new URL('key.pem', fixtures))
const cert = readFileSync(new URL('cert.pem', fixtures))

test('HTTPS: an in-flight request ends with Connection: close and its TLS socket closes; an idle one is closed by the drain', async (t) => {
  const entered = deferred()
  const release = deferred()
  const timeout = 20_000 // far: reaching it would be the failure
  const { app } = await makeApp({ timeout }, (app) => {
    app.get('/slow', async () => { entered.resolve(); await release.promise; return 'slow' })
  }, { https: { key, cert } })
  t.after(() => app.close())
  const port = await listen(app)

  const open = async (): Promise<{ socket: import('node:tls').TLSSocket, data: () => string, closed: Promise<unknown> }> => {
    const socket = connect({ host: '127.0.0.1', port, ca: cert })
    await once(socket, 'secureConnect')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (c: string) => { data += c })
    return { socket, data: () => data, closed: once(socket, 'close') }
  }
  const busy = await open()
  const idle = await open()
  t.after(() => { busy.socket.destroy(); idle.socket.destroy() })
  idle.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  busy.socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  await entered.promise
  await waitFor(() => idle.data().endsWith('{"hello":"world"}'), 'the idle socket\'s response', 5000, 5)
  assert.equal(app.drain.inFlight, 1)

  const started = Date.now()
  const closing = app.close()
  await waitFor(() => app.drain.phase === 'draining', 'draining', 5000, 5)
  release.resolve()
  await closing
  await Promise.all([busy.closed, idle.closed])
  assert.ok(Date.now() - started < timeout, 'closed when the request ended, not at the deadline')
  assert.match(busy.data(), /^HTTP\/1\.1 200 OK\r\n/)
  assert.match(busy.data(), /\r\nconnection: close\r\n/i)
  assert.match(busy.data(), /slow$/)
  assert.match(idle.data(), /\r\nconnection: keep-alive\r\n/i)
  assert.equal(app.drain.idleClosed, 1)
  assert.equal(app.drain.destroyed, 0)
})

test('HTTPS: a client stuck in its TLS handshake is followed from its TCP connection and closed by the drain, not left holding the close until the deadline', async (t) => {
  const timeout = 20_000 // far: reaching it would be the failure
  const { app } = await makeApp({ timeout }, () => {}, { https: { key, cert } })
  t.after(() => app.close())
  const port = await listen(app)

  // A real ClientHello, captured from a real TLS client by a plain TCP listener...
  const hello = await new Promise<Buffer>((resolve, reject) => {
    const catcher = createServer((s) => { s.once('data', (d: Buffer) => { resolve(d); s.destroy(); catcher.close() }) })
    catcher.listen(0, '127.0.0.1', () => {
      const c = connect({ host: '127.0.0.1', port: (catcher.address() as AddressInfo).port, ca: cert })
      c.on('error', () => {})
    })
    catcher.on('error', reject)
  })
  // ...of which the stuck client sends only the first half: the server waits for the rest.
  const stuck = createConnection({ host: '127.0.0.1', port })
  t.after(() => { stuck.destroy() })
  stuck.on('error', () => {})
  const closed = once(stuck, 'close')
  await once(stuck, 'connect')
  stuck.write(hello.subarray(0, Math.floor(hello.length / 2)))
  const connections = (): Promise<number> => new Promise((resolve) => { app.server.getConnections((_err, n) => resolve(n)) })
  await waitFor(async () => await connections() >= 1, 'the server to see the connection', 5000, 5)

  const started = Date.now()
  await app.close()
  await closed
  const ms = Date.now() - started
  t.diagnostic(`close with a client stuck mid-handshake: ${ms} ms (deadline ${timeout} ms)`)
  assert.ok(ms < timeout / 2, `closed by the drain as an idle connection (${ms} ms), not at the deadline`)
  assert.equal(app.drain.destroyed, 0, 'nothing cut at the deadline')
})
