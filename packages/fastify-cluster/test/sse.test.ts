import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { EventSource } from 'eventsource'
import { freePort, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { isEvent, primaryReady } from './start-cluster.ts'

const fixture = fileURLToPath(new URL('./fixtures/sse-app.mjs', import.meta.url))

interface Served { pid: number, workerId: number, generation: number }

/** A real EventSource (the `eventsource` package: WHATWG semantics, reconnects after `retry`). */
function subscribe (url: string): { es: EventSource, hellos: Served[], byes: number, ticks: number, errors: number } {
  const es = new EventSource(url)
  const c = { es, hellos: [] as Served[], byes: 0, ticks: 0, errors: 0 }
  es.addEventListener('hello', (e) => { c.hellos.push(JSON.parse(e.data) as Served) })
  es.addEventListener('bye', () => { c.byes++ })
  es.onmessage = () => { c.ticks++ }
  es.onerror = () => { c.errors++ }
  return c
}

async function start (t: { after: (fn: () => Promise<void>) => void }, shutdownTimeout: number): Promise<{ p: Spawned, port: number }> {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: String(shutdownTimeout) } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 90_000)
  return { p, port }
}

test('SSE on drainSignal through a reload: every stream ends with "bye", the client reconnects to the new generation, no deadline', async (t) => {
  const { p, port } = await start(t, 20_000)
  const oldPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const clients = Array.from({ length: 6 }, () => subscribe(`http://127.0.0.1:${port}/sse`))
  t.after(() => { for (const c of clients) c.es.close() })
  await waitFor(() => clients.every((c) => c.hellos.length === 1 && c.ticks > 0), 'every stream flowing', 20_000)
  assert.equal(new Set(clients.map((c) => c.hellos[0]!.pid)).size, 2, 'streams on both workers')

  p.child.kill('SIGHUP')
  await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60_000, 'the reload')
  await waitFor(() => clients.every((c) => c.hellos.at(-1)!.generation === 1), 'every client on the new generation', 20_000)
  const ticks = clients.map((c) => c.ticks)
  await waitFor(() => clients.every((c, i) => c.ticks > ticks[i]!), 'the new streams flowing', 20_000)

  for (const c of clients) {
    assert.ok(c.byes >= 1, 'the stream ended with the app\'s goodbye')
    assert.ok(!oldPids.includes(c.hellos.at(-1)!.pid))
  }
  const drains = p.lines.filter((l) => l.msg === 'drain: done')
  assert.ok(drains.length >= 2)
  for (const d of drains) assert.ok((d.ms as number) < 5_000, `a drain took ${String(d.ms)} ms`)
  assert.equal(p.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('deadline')).length, 0)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

test('an SSE route that ignores drainSignal is cut at the drain deadline, and a log line names it', async (t) => {
  const shutdownTimeout = 3_000 // drain deadline: 3000 - 10 % = 2700 ms
  const { p, port } = await start(t, shutdownTimeout)
  const clients = Array.from({ length: 2 }, () => subscribe(`http://127.0.0.1:${port}/stubborn`))
  t.after(() => { for (const c of clients) c.es.close() })
  await waitFor(() => clients.every((c) => c.ticks > 0), 'streams flowing', 20_000)
  const started = Date.now()
  p.child.kill('SIGTERM')
  const exit = await p.waitForExit(shutdownTimeout + 10_000)
  const took = Date.now() - started
  const cut = p.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('drain: deadline of 2700 ms reached'))
  t.diagnostic(`stubborn SSE: exit ${String(exit.code)} after ${took} ms; ${JSON.stringify(cut.map((l) => l.msg))}`)
  assert.ok(took >= 2_600, `not before the deadline (${took} ms)`)
  assert.equal(exit.code, 0, 'the drain cut the streams itself, the primary killed nobody')
  assert.equal(cut.reduce((n, l) => n + ((l.routes as Record<string, number>)['GET /stubborn'] ?? 0), 0), 2, 'both streams reported by route')
  assert.ok(cut.every((l) => /still streaming/.test(String(l.msg))), 'the line says the responses were still streaming')
  assert.ok(clients.every((c) => c.byes === 0 && c.errors >= 1), 'the clients saw their streams cut')
})
