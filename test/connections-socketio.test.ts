// Socket.IO with the long-polling transport on 2 workers: every HTTP request of a session must reach
// the worker that holds the session. balance 'sticky' does that by client address; balance
// 'primary' (round-robin) does not, and the same test counts the "Session ID unknown" it causes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Agent } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { io, type Socket } from 'socket.io-client'
import { freePort, spawnNode, waitFor, type Spawned } from './helpers/index.ts'
import { isEvent, primaryReady } from '../packages/fastify-cluster/test/start-cluster.ts'

const fixture = fileURLToPath(new URL('./fixtures/socketio-app.mjs', import.meta.url))
const ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`)
const PER_ADDRESS = 2
const PINGS = 5

interface Outcome {
  sessionUnknown: number
  clientErrors: string[]
  acked: number
  ackPids: Set<number>
  sessionsPerClient: number[]
  newsReceived: number
}

async function start (t: { after: (fn: () => Promise<void>) => void }, balance: string): Promise<{ p: Spawned, port: number }> {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_BALANCE: balance } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length === 2, 'two workers ready', 90_000)
  return { p, port }
}

/** Clients from several addresses, a new TCP connection per HTTP request: ping with acks, one shout, count everything. */
async function run (p: Spawned, port: number): Promise<Outcome> {
  const clientErrors: string[] = []
  const clients: Array<{ socket: Socket, pids: Set<number>, news: number }> = []
  for (const localAddress of ADDRESSES) {
    for (let i = 0; i < PER_ADDRESS; i++) {
      const socket = io(`http://127.0.0.1:${port}`, {
        transports: ['polling'],
        agent: new Agent({ keepAlive: false, localAddress }) as never, // a new connection per request, from this address
        forceNew: true,
        reconnection: false,
        timeout: 10_000
      })
      const c = { socket, pids: new Set<number>(), news: 0 }
      socket.on('connect_error', (err) => clientErrors.push(`connect_error ${err.message}`))
      socket.on('disconnect', (reason) => { if (reason !== 'io client disconnect') clientErrors.push(`disconnect ${reason}`) })
      socket.on('news', () => { c.news++ })
      clients.push(c)
      await sleep(Math.random() * 10) // clients do not start in lockstep (see below)
    }
  }
  let acked = 0
  try {
    // Connected (or failed) within a generous deadline; a failure is counted, not waited for.
    await waitFor(() => clients.every((c) => c.socket.connected || clientErrors.length > 0) || clientErrors.length >= clients.length,
      'clients connected', 30_000)
    await Promise.all(clients.map(async (c) => {
      for (let n = 0; n < PINGS && c.socket.connected; n++) {
        // Jitter: 16 clients in lockstep make every phase 16 connections long, so round robin would
        // give each client the same worker every time and the negative control below would pass
        // by accident (seen once: 1 "Session ID unknown" of 16 sessions). Real clients are not in step.
        await sleep(Math.random() * 20)
        try {
          const reply = await c.socket.timeout(5_000).emitWithAck('ping', n) as { n: number, pid: number }
          if (reply.n === n) { acked++; c.pids.add(reply.pid) }
        } catch (err) {
          clientErrors.push(`ack ${(err as Error).message}`)
        }
      }
    }))
    const connected = clients.filter((c) => c.socket.connected)
    connected[0]?.socket.emit('shout', 'hello everyone')
    await waitFor(() => connected.every((c) => c.news > 0 || !c.socket.connected), 'the broadcast', 10_000).catch(() => {})
  } finally {
    for (const c of clients) c.socket.disconnect()
  }
  const sessionUnknown = p.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('Session ID unknown')).length
  return {
    sessionUnknown,
    clientErrors,
    acked,
    ackPids: new Set(clients.flatMap((c) => [...c.pids])),
    sessionsPerClient: clients.map((c) => c.pids.size),
    newsReceived: clients.filter((c) => c.news > 0).length
  }
}

const total = ADDRESSES.length * PER_ADDRESS

test('socket.io long-polling on 2 workers with balance sticky: 0 "Session ID unknown", every ack answered, sessions on both workers, a broadcast reaches everyone', async (t) => {
  const { p, port } = await start(t, 'sticky')
  const o = await run(p, port)
  t.diagnostic(`sticky: ${JSON.stringify({ ...o, ackPids: [...o.ackPids] })}`)
  assert.equal(o.sessionUnknown, 0)
  assert.deepEqual(o.clientErrors, [])
  assert.equal(o.acked, total * PINGS, 'every acked event answered')
  assert.equal(o.ackPids.size, 2, 'sessions on both workers')
  assert.deepEqual(o.sessionsPerClient, Array(total).fill(1), 'each session answered by one worker')
  assert.equal(o.newsReceived, total, 'the broadcast reached the clients of both workers (cluster adapter)')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

test('the same clients with balance primary (round-robin) fail: "Session ID unknown" (the test can fail)', async (t) => {
  const { p, port } = await start(t, 'primary')
  const o = await run(p, port)
  t.diagnostic(`primary: sessionUnknown ${o.sessionUnknown}, client errors ${o.clientErrors.length}, acked ${o.acked}/${total * PINGS}`)
  assert.ok(o.sessionUnknown >= total / 2, `round-robin splits sessions: ${o.sessionUnknown} "Session ID unknown"`)
  assert.ok(o.acked < total * PINGS, 'some acked events were never answered')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

test('balance sticky through a reload: sessions of the replaced workers reconnect and are answered by the new generation', async (t) => {
  const { p, port } = await start(t, 'sticky')
  const oldPids = new Set(p.lines.filter(primaryReady).map((l) => l.workerPid as number))
  const clients = ADDRESSES.map((localAddress) => io(`http://127.0.0.1:${port}`, {
    transports: ['polling'],
    agent: new Agent({ keepAlive: false, localAddress }) as never,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    timeout: 10_000
  }))
  t.after(() => { for (const c of clients) c.disconnect() })
  const ping = async (c: Socket, n: number): Promise<number> => ((await c.timeout(5_000).emitWithAck('ping', n)) as { pid: number }).pid
  await waitFor(() => clients.every((c) => c.connected), 'clients connected', 30_000)
  for (const c of clients) assert.ok(oldPids.has(await ping(c, 0)))

  p.child.kill('SIGHUP')
  await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60_000, 'the reload')
  // Every client is back (socket.io-client reconnects on "transport close"), served by a new worker.
  const after = new Set<number>()
  for (const c of clients) {
    const pid = await waitFor(async () => {
      if (!c.connected) return undefined
      try { const pid = await ping(c, 1); return oldPids.has(pid) ? undefined : pid } catch { return undefined }
    }, 'a new-generation answer', 30_000, 50)
    after.add(pid)
  }
  const unknown = p.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('Session ID unknown')).length
  t.diagnostic(`sticky reload: ${unknown} "Session ID unknown" during the hand-over (each one a client reconnecting)`)
  assert.equal(after.size, 2, 'the clients are spread over both new workers')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

const slowFixture = fileURLToPath(new URL('./fixtures/socketio-sticky-app.mjs', import.meta.url))

/** GET / from `localAddress` on a new connection: the answering pid, or undefined (no answer within `ms`). */
async function answer (port: number, localAddress: string, ms: number): Promise<number | undefined> {
  const { request } = await import('node:http')
  return await new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', localAddress, agent: false, timeout: ms }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { try { resolve((JSON.parse(body) as { pid: number }).pid) } catch { resolve(undefined) } })
    })
    req.on('error', () => resolve(undefined))
    req.on('timeout', () => { req.destroy(); resolve(undefined) })
    req.end()
  })
}

interface Issue27Run { readyAtStart: number, unknownLive: number, unknownDead: number, sessionWorkers: number, answeredByVictimAfter: number }

/**
 * Issue 27's scenario: 2 workers, slot 1's first worker 8 s slower; 8 clients (127.0.0.2-9, a new
 * connection per request) start at the first answer; 3 acked pings each; 3 more once both workers
 * are up; SIGKILL of one worker; 3 more pings each once its replacement is up.
 */
async function issue27 (t: { after: (fn: () => void | Promise<void>) => void, diagnostic: (s: string) => void }, env: Record<string, string> = {}): Promise<Issue27Run> {
  const port = await freePort()
  const p = spawnNode(slowFixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_BALANCE: 'sticky', SIO_SLOW_MS: '8000', ...env } })
  t.after(() => p.cleanup())
  const ready = (): number[] => p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  // The first answer, from any of the clients' addresses (each try on a new connection, short).
  let i = 0
  await waitFor(async () => await answer(port, ADDRESSES[i++ % ADDRESSES.length]!, 300), 'the first answer', 60_000, 10)
  const readyAtStart = ready().length
  const clients = ADDRESSES.map((localAddress) => {
    const socket = io(`http://127.0.0.1:${port}`, {
      transports: ['polling'],
      agent: new Agent({ keepAlive: false, localAddress }) as never, // a new connection per request, from this address
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      timeout: 30_000
    })
    return { localAddress, socket, pids: [] as number[], last: 0 }
  })
  t.after(() => { for (const c of clients) c.socket.disconnect() })
  const round = async (tag: string): Promise<void> => {
    await Promise.all(clients.map(async (c) => {
      await waitFor(() => c.socket.connected, `${c.localAddress} connected (${tag})`, 60_000)
      for (let n = 0; n < 3; n++) {
        const r = await waitFor(async () => {
          try { return await c.socket.timeout(10_000).emitWithAck('ping', n) as { count: number, pid: number } } catch { return undefined }
        }, `${c.localAddress} ping ${n} answered (${tag})`, 60_000)
        // the session's in-memory counter: the same session answered every ping (or a new session after the kill)
        assert.ok(r.count === c.last + 1 || r.count === 1, `${c.localAddress}: count ${r.count} after ${c.last}`)
        c.last = r.count
        c.pids.push(r.pid)
      }
    }))
  }
  await round('from the first answer')
  await waitFor(() => ready().length >= 2, 'both workers ready', 90_000)
  await round('both workers up')
  // mid-test, with every client holding its long-poll (the poll after the last ack re-issued)
  await waitFor(() => p.lines.filter((l) => l.msg === 'socket.io session').length >= clients.length, 'sessions logged', 10_000)
  await new Promise((resolve) => setTimeout(resolve, 500))
  const first = new Set(clients.map((c) => c.pids[3]))
  const victim = [...first][0]!
  process.kill(victim, 'SIGKILL')
  await waitFor(() => ready().length >= 3, 'the replacement ready', 90_000)
  await round('after the kill')
  // Each "Session ID unknown", by the worker that made the session: a session of a worker still alive
  // is the sticky failure; one of the SIGKILLed worker's sessions is its clients' engine.io 'close'
  // packet (a POST with the dead session's id, sent when the poll fails), which no worker can know.
  const sessionPid = new Map(p.lines.filter((l) => l.msg === 'socket.io session').map((l) => [l.sid as string, l.pid as number]))
  const unknown = p.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('Session ID unknown'))
    .map((l) => ({ pid: sessionPid.get(/[?&]sid=([^&]+)/.exec(String(l.url))?.[1] ?? ''), method: l.method as string }))
  const unknownLive = unknown.filter((u) => u.pid !== victim).length
  const unknownDead = unknown.filter((u) => u.pid === victim)
  const answeredByVictimAfter = clients.filter((c) => c.pids.slice(6).includes(victim)).length
  const run = { readyAtStart, unknownLive, unknownDead: unknownDead.length, sessionWorkers: first.size, answeredByVictimAfter }
  t.diagnostic(`STICKY-RUN ${JSON.stringify({ ...run, deadMethods: unknownDead.map((u) => u.method).join(','), env })}`)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
  return run
}

test('issue 27: sessions start when the FIRST worker answers (the second still starting), a worker is SIGKILLed mid-test: 0 "Session ID unknown" for sessions of live workers, sessions on both workers, no adapter', async (t) => {
  const run = await issue27(t)
  assert.equal(run.readyAtStart, 1, 'the sessions began while the second worker was still starting')
  assert.equal(run.unknownLive, 0, '"Session ID unknown" for sessions of workers alive')
  assert.equal(run.sessionWorkers, 2, 'sessions on both workers')
  assert.equal(run.answeredByVictimAfter, 0, 'nobody is answered by the killed worker after the kill')
})

test('issue 27, the same with NCLUST_STICKY_WAIT=0 (no wait: the addresses of the slot still starting go elsewhere, then move back): sessions are lost (the test can fail)', async (t) => {
  const run = await issue27(t, { NCLUST_STICKY_WAIT: '0' })
  assert.equal(run.readyAtStart, 1)
  assert.ok(run.unknownLive > 0, `${run.unknownLive} "Session ID unknown" for sessions of live workers`)
})
