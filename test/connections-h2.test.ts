// A rolling reload under mixed load on one port: HTTP/2 clients (the old worker sends GOAWAY, the
// client opens a new session) and HTTP/1.1 keep-alive clients (Connection: close) through
// allowHTTP1. Every request is counted; none may fail.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { connect, constants, type ClientHttp2Session } from 'node:http2'
import { Pool } from 'undici'
import { freePort, isAlive, spawnNode, waitFor } from './helpers/index.ts'
import { isEvent, primaryReady } from '../packages/fastify-cluster/test/start-cluster.ts'

const fixture = fileURLToPath(new URL('./fixtures/h2-app.mjs', import.meta.url))
const ca = readFileSync(new URL('../packages/fastify-drain/test/fixtures/cert.pem', import.meta.url))

interface Tally { versions: Map<string, number>, statuses: Map<number, number>, errors: string[], total: number, retried: number }

/**
 * HTTP/2 clients on node:http2 (undici 7 fails requests on a graceful GOAWAY, nodejs/undici#5089):
 * `sessions` sessions with `streams` requests in flight on each; after a GOAWAY, new requests go on
 * a new session. A stream the server refused (REFUSED_STREAM, or opened after the GOAWAY: never
 * processed, RFC 9113 §6.8) is sent again and counted in `retried`; any other failure is an error.
 */
function loadH2 (port: number, sessions: number, streams: number): { stop: () => Promise<Tally> } {
  const tally: Tally = { versions: new Map(), statuses: new Map(), errors: [], total: 0, retried: 0 }
  const state = { running: true }
  const open: ClientHttp2Session[] = []
  const fresh = (): ClientHttp2Session => {
    const s = connect(`https://127.0.0.1:${port}`, { ca, rejectUnauthorized: false })
    s.on('error', () => {}) // seen through the requests
    open.push(s)
    return s
  }
  const one = (session: ClientHttp2Session): Promise<'ok' | 'refused'> => new Promise((resolve) => {
    let req
    try { req = session.request({ ':path': '/' }) } catch { resolve('refused'); return } // session already going away
    let body = ''
    let status = 0
    req.setEncoding('utf8')
    req.on('response', (h) => { status = Number(h[':status']) })
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      tally.statuses.set(status, (tally.statuses.get(status) ?? 0) + 1)
      try {
        const v = (JSON.parse(body) as { httpVersion: string }).httpVersion
        tally.versions.set(v, (tally.versions.get(v) ?? 0) + 1)
      } catch { tally.errors.push(`bad body ${body.slice(0, 100)}`) }
      resolve('ok')
    })
    req.on('error', (err: Error & { code?: string }) => {
      const refused = req.rstCode === constants.NGHTTP2_REFUSED_STREAM || err.code === 'ERR_HTTP2_GOAWAY_SESSION'
      if (refused) resolve('refused')
      else { tally.errors.push(`${err.code ?? ''} ${err.message}`); resolve('ok') }
    })
    req.end()
  })
  const group = async (): Promise<void> => {
    let session = fresh()
    const loop = async (): Promise<void> => {
      while (state.running) {
        if (session.closed || session.destroyed || (session as unknown as { goawayReceived?: boolean }).goawayReceived === true) session = fresh()
        const s = session
        const outcome = await one(s)
        if (outcome === 'refused') { tally.retried++; if (s === session) session = fresh(); continue }
        tally.total++
      }
    }
    session.on('goaway', () => { session = fresh() })
    await Promise.all(Array.from({ length: streams }, loop))
  }
  const groups = Array.from({ length: sessions }, group)
  return {
    async stop () {
      state.running = false
      await Promise.all(groups)
      for (const s of open) s.close()
      return tally
    }
  }
}

/** HTTP/1.1 keep-alive clients (undici) on the same TLS port. */
function loadH1 (port: number, connections: number): { stop: () => Promise<Tally> } {
  const pool = new Pool(`https://127.0.0.1:${port}`, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    connect: { ca, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }
  })
  const tally: Tally = { versions: new Map(), statuses: new Map(), errors: [], total: 0, retried: 0 }
  const state = { running: true }
  const loops = Array.from({ length: connections }, async () => {
    while (state.running) {
      try {
        const res = await pool.request({ path: '/', method: 'GET', headersTimeout: 20_000, bodyTimeout: 20_000 })
        const body = await res.body.json() as { httpVersion: string }
        tally.statuses.set(res.statusCode, (tally.statuses.get(res.statusCode) ?? 0) + 1)
        tally.versions.set(body.httpVersion, (tally.versions.get(body.httpVersion) ?? 0) + 1)
      } catch (err) {
        tally.errors.push(`${(err as { code?: string }).code ?? ''} ${(err as Error).message}`)
      }
      tally.total++
    }
  })
  return {
    async stop () {
      state.running = false
      await Promise.all(loops)
      await pool.close()
      return tally
    }
  }
}

test('HTTP/2 + HTTP/1.1 (allowHTTP1) on one port: a rolling reload under mixed load loses nothing', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '20000' } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length === 2, 'two workers ready', 90_000)
  const oldPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)

  const h2 = loadH2(port, 4, 4)
  const h1 = loadH1(port, 8)
  await waitFor(() => p.lines.filter((l) => l.msg === 'request completed').length > 300, 'load flowing', 30_000)
  p.child.kill('SIGHUP')
  const done = await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60_000, 'the reload')
  for (const pid of oldPids) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30_000)
  const before = p.lines.length
  await waitFor(() => p.lines.length > before + 300, 'load on the new generation', 30_000)
  const [a, b] = await Promise.all([h2.stop(), h1.stop()])

  t.diagnostic(`h2: ${a.total} requests ${JSON.stringify([...a.versions])} ${a.errors.length} errors, ${a.retried} refused by a GOAWAY and sent again; h1: ${b.total} requests ${JSON.stringify([...b.versions])} ${b.errors.length} errors; reload ${String(done.ms)} ms`)
  assert.equal(done.replaced, 2)
  assert.deepEqual([...a.versions.keys()], ['2.0'], 'the h2 clients spoke HTTP/2')
  assert.deepEqual([...b.versions.keys()], ['1.1'], 'the others HTTP/1.1, on the same port')
  assert.deepEqual(a.errors, [], 'no HTTP/2 request failed')
  assert.deepEqual(b.errors, [], 'no HTTP/1.1 request failed')
  assert.deepEqual([...a.statuses.keys()], [200])
  assert.deepEqual([...b.statuses.keys()], [200])
  const drains = p.lines.filter((l) => l.msg === 'drain: done')
  for (const d of drains) assert.ok((d.ms as number) < 10_000, `a drain took ${String(d.ms)} ms`)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})
