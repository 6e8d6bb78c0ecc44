import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { freePort, isAlive, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { isEvent, primaryReady } from './start-cluster.ts'

const fixture = fileURLToPath(new URL('./fixtures/ws-app.mjs', import.meta.url))
const SHUTDOWN_TIMEOUT = 20_000 // reaching the drain's deadline (a little below) would be the failure

interface Served { pid: number, workerId: number, generation: number }

/**
 * A WebSocket client as a browser app writes one: greeted by the server, it reconnects as soon as
 * the server closes it (and says with which code), and a message is sent, then awaited.
 */
class Client {
  ws!: WebSocket
  served: Served | null = null
  readonly codes: number[] = []
  readonly echoes = new Map<string, Served>()
  reconnect = true
  private waiting = new Map<string, () => void>()

  constructor (readonly url: string) {}

  async open (): Promise<void> {
    const ws = new WebSocket(this.url)
    this.ws = ws
    this.served = null
    ws.on('error', () => {}) // read through the close code
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { hello?: Served, echo?: string } & Served
      if (m.hello !== undefined) this.served = m.hello
      if (m.echo !== undefined) {
        this.echoes.set(m.echo, { pid: m.pid, workerId: m.workerId, generation: m.generation })
        this.waiting.get(m.echo)?.()
      }
    })
    ws.once('close', (code: number) => {
      this.codes.push(code)
      if (this.reconnect) void this.open().catch(() => {})
    })
    await once(ws, 'open')
    await waitFor(() => this.served, 'the greeting', 10_000, 5)
  }

  async send (text: string): Promise<Served> {
    const echoed = new Promise<void>((resolve) => this.waiting.set(text, resolve))
    this.ws.send(text)
    await echoed
    return this.echoes.get(text)!
  }
}

async function startWsCluster (t: { after: (fn: () => Promise<void>) => void }): Promise<{ p: Spawned, port: number }> {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: String(SHUTDOWN_TIMEOUT) } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 90_000)
  return { p, port }
}

async function connectAcross (port: number, n: number): Promise<Client[]> {
  const clients: Client[] = []
  for (let i = 0; i < n; i++) {
    const c = new Client(`ws://127.0.0.1:${port}/ws`)
    await c.open()
    clients.push(c)
  }
  return clients
}

const N = 12
const M = 5

test('reload with WebSocket clients: each gets 1012, reconnects to the new generation, no message lost, no deadline waited', async (t) => {
  const { p, port } = await startWsCluster(t)
  const oldPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const clients = await connectAcross(port, N)
  t.after(() => { for (const c of clients) { c.reconnect = false; c.ws.terminate() } })
  assert.equal(new Set(clients.map((c) => c.served!.pid)).size, 2, 'clients on both workers')
  for (const c of clients) for (let i = 0; i < M; i++) await c.send(`before ${i}`)

  p.child.kill('SIGHUP')
  const done = await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60_000, 'the reload')
  for (const pid of oldPids) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30_000)
  await waitFor(() => clients.every((c) => c.served !== null && c.served.generation === 1 && c.ws.readyState === WebSocket.OPEN),
    'every client reconnected to the new generation', 30_000)
  for (const c of clients) for (let i = 0; i < M; i++) await c.send(`after ${i}`)

  const codes = clients.flatMap((c) => c.codes)
  t.diagnostic(`reload with ${N} WebSocket clients: ${String(done.ms)} ms; close codes ${JSON.stringify(codes)}`)
  assert.ok(clients.every((c) => c.codes.length >= 1), 'every client was closed by the drain')
  assert.deepEqual(codes.filter((code) => code !== 1012), [], 'every close was 1012 (service restart): no 1005, no 1006')
  for (const c of clients) {
    for (let i = 0; i < M; i++) {
      assert.ok(oldPids.includes(c.echoes.get(`before ${i}`)!.pid))
      const after = c.echoes.get(`after ${i}`)!
      assert.ok(!oldPids.includes(after.pid) && after.generation === 1, 'answered by a new worker')
    }
  }
  const drains = p.lines.filter((l) => l.msg === 'drain: done')
  assert.ok(drains.length >= 2)
  for (const d of drains) assert.ok((d.ms as number) < 5_000, `a drain took ${String(d.ms)} ms: the handshakes, not the deadline`)
  assert.equal(p.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('deadline')).length, 0)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

test('SIGTERM with WebSocket clients: each gets 1001 and the cluster exits 0 long before the deadline', async (t) => {
  const { p, port } = await startWsCluster(t)
  const clients = await connectAcross(port, N)
  t.after(() => { for (const c of clients) c.ws.terminate() })
  for (const c of clients) c.reconnect = false
  assert.equal(new Set(clients.map((c) => c.served!.pid)).size, 2, 'clients on both workers')
  for (const c of clients) await c.send('before')

  const started = Date.now()
  p.child.kill('SIGTERM')
  const exit = await p.waitForExit(SHUTDOWN_TIMEOUT + 10_000)
  const took = Date.now() - started
  await waitFor(() => clients.every((c) => c.codes.length === 1), 'every client closed', 10_000)
  t.diagnostic(`SIGTERM with ${N} WebSocket clients: exit ${String(exit.code)} after ${took} ms`)
  assert.equal(exit.code, 0)
  assert.deepEqual(clients.map((c) => c.codes[0]), clients.map(() => 1001), 'every client got 1001 (going away)')
  assert.ok(took < SHUTDOWN_TIMEOUT / 4, `exit after ${took} ms, well before the ${SHUTDOWN_TIMEOUT} ms deadline`)
})
