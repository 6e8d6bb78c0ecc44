// A default Fastify() (no server option) under keep-alive load through a reload, a crashing worker
// and a SIGINT: every request that goes out on an open connection is answered 2xx. Only brand-new
// connections may be refused once the cluster is shutting down.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { freePort, get, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { fixture, isEvent, primaryReady, unexpectedExit } from './start-cluster.ts'

interface Tally { statuses: Map<number, number>, refusedNew: string[], lost: string[], total: number, phase: string }

/**
 * `connections` keep-alive clients (node:http, whose `reusedSocket` tells whether a request went out
 * on an already open connection), back to back; every request counted: its status, or how it failed.
 */
function load (port: number, connections: number): { tally: Tally, stop: () => Promise<Tally> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  const tally: Tally = { statuses: new Map(), refusedNew: [], lost: [], total: 0, phase: 'serving' }
  const state = { running: true }
  const once = (): Promise<void> => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/slow?ms=20', agent }, (res) => {
      res.resume()
      res.on('end', () => { tally.statuses.set(res.statusCode ?? 0, (tally.statuses.get(res.statusCode ?? 0) ?? 0) + 1); resolve() })
      res.on('error', (err) => { tally.lost.push(`${tally.phase}: response ${err.message}`); resolve() })
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      const line = `${tally.phase}: ${err.code ?? ''} ${err.message}`
      // On a connection opened for this request, the server may refuse (or, as the last worker of a
      // shutting-down cluster leaves, reset) it: it never reached the app. On an open one it must not fail.
      if (req.reusedSocket) tally.lost.push(line)
      else { tally.refusedNew.push(line); setTimeout(resolve, 20) }
      if (req.reusedSocket) resolve()
    })
  })
  const loops = Array.from({ length: connections }, async () => {
    while (state.running) { await once(); tally.total++ }
  })
  return {
    tally,
    async stop () {
      state.running = false
      await Promise.all(loops)
      agent.destroy()
      return tally
    }
  }
}

for (const variant of [{ name: 'a default Fastify()', env: {} }, { name: 'Fastify({ return503OnClosing: false })', env: { FIXTURE_FASTIFY: JSON.stringify({ return503OnClosing: false }) } }]) {
  test(`${variant.name}, 50 keep-alive clients: a SIGHUP reload, a crashing worker and SIGINT lose no request and answer no 503`, async (t) => {
    const port = await freePort()
    const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...variant.env } })
    t.after(() => p.cleanup())
    await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 30000)
    const traffic = load(port, 50)
    const flowing = (n: number): Promise<unknown> => { const from = traffic.tally.total; return waitFor(() => traffic.tally.total >= from + n, `${n} more requests`, 30000) }
    await flowing(300)

    traffic.tally.phase = 'reload'
    p.child.kill('SIGHUP')
    const reload = await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60000, 'the reload')
    assert.equal(reload.replaced, 2)
    traffic.tally.phase = 'after reload'
    await flowing(300)
    const afterReload = traffic.tally.total

    // An uncaught exception in one worker: it drains (serving what arrives on its open connections), exits 1, is replaced.
    traffic.tally.phase = 'crash'
    const crash = await get(port, '/crash')
    assert.equal(crash.status, 200)
    await p.waitForLine((l) => unexpectedExit(l) && l.workerPid === crash.json().crashing, 30000, 'the crashed worker to exit')
    await waitFor(() => p.lines.filter(primaryReady).length >= 5, 'its replacement ready', 30000)
    traffic.tally.phase = 'after crash'
    await flowing(300)
    const beforeStop = traffic.tally.total

    traffic.tally.phase = 'SIGINT'
    p.child.kill('SIGINT')
    const exit = await p.waitForExit(30000)
    const tally = await traffic.stop()
    t.diagnostic(`${tally.total} requests (${afterReload} up to the reload's end, ${beforeStop} before SIGINT): statuses ${JSON.stringify([...tally.statuses])}, new connections refused ${tally.refusedNew.length}, lost ${tally.lost.length}`)
    assert.equal(exit.code, 0)
    assert.deepEqual(tally.lost, [], 'no request died on an open connection (no reset, no "other side closed")')
    assert.deepEqual([...tally.statuses.keys()], [200], 'only 200s: no 503 from Fastify\'s closing flag')
    assert.deepEqual(tally.refusedNew.filter((l) => !l.startsWith('SIGINT: ')), [], 'new connections are refused only once the cluster shuts down')
    assert.equal(tally.refusedNew.length + tally.lost.length, tally.total - [...tally.statuses.values()].reduce((a, b) => a + b, 0), 'every request counted once')
  })
}
