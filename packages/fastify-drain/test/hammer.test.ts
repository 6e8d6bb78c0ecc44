import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'undici'
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http'
import { makeApp, listen } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.ts'

interface ClientTally { ok: number, lastConnection: string | undefined, end: string, lost: string[] }

/** One undici keep-alive connection sending back to back until a fresh connection is refused. */
async function hammerUndici (port: number, tally: ClientTally, stop: () => boolean): Promise<void> {
  const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1, keepAliveTimeout: 60_000 })
  try {
    while (!stop()) {
      try {
        const res = await client.request({ path: '/', method: 'GET' })
        const body = await res.body.text()
        if (res.statusCode !== 200 || body !== '{"hello":"world"}') tally.lost.push(`status ${res.statusCode}`)
        else tally.ok++
        const connection = res.headers.connection
        tally.lastConnection = Array.isArray(connection) ? connection.join(',') : connection
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? String(err)
        if (code === 'ECONNREFUSED') { tally.end = 'refused'; return }
        tally.lost.push(code)
      }
    }
    tally.end = 'stopped'
  } finally {
    await client.destroy()
  }
}

/** Same with node:http: an Agent with keepAlive and one socket. */
async function hammerNode (port: number, tally: ClientTally, stop: () => boolean): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  try {
    while (!stop()) {
      try {
        const res = await new Promise<IncomingMessage>((resolve, reject) => {
          const req = httpRequest({ host: '127.0.0.1', port, path: '/', agent }, resolve)
          req.on('error', reject)
          req.end()
        })
        let body = ''
        res.setEncoding('utf8')
        for await (const chunk of res) body += chunk as string
        if (res.statusCode !== 200 || body !== '{"hello":"world"}') tally.lost.push(`status ${res.statusCode ?? 0}`)
        else tally.ok++
        tally.lastConnection = res.headers.connection
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? String(err)
        if (code === 'ECONNREFUSED') { tally.end = 'refused'; return }
        tally.lost.push(code)
      }
    }
    tally.end = 'stopped'
  } finally {
    agent.destroy()
  }
}

for (const [name, hammer, clients] of [['undici', hammerUndici, 50], ['node:http', hammerNode, 30]] as const) {
  test(`${clients} ${name} keep-alive clients hammering while the server closes: only 200s, the last with Connection: close, then refused`, async (t) => {
    const { app } = await makeApp()
    t.after(() => app.close())
    const port = await listen(app)

    const tallies: ClientTally[] = Array.from({ length: clients }, () => ({ ok: 0, lastConnection: undefined, end: '', lost: [] }))
    const giveUp = Date.now() + 60_000
    const loops = tallies.map((tally) => hammer(port, tally, () => Date.now() > giveUp))
    await waitFor(() => tallies.every((x) => x.ok >= 5), 'every client to get going', 30_000, 5)

    const before = tallies.reduce((n, x) => n + x.ok, 0)
    await app.drainAndClose() // a default app: app.close() would let Fastify answer late requests 503
    await Promise.all(loops)
    const total = tallies.reduce((n, x) => n + x.ok, 0)
    const lost = tallies.flatMap((x) => x.lost)

    t.diagnostic(`200s: ${total} (${total - before} after close started), lost: ${lost.length}, idleClosed ${app.drain.idleClosed}`)
    assert.deepEqual(lost, [], 'no reset, no 503')
    for (const [i, x] of tallies.entries()) {
      assert.equal(x.end, 'refused', `client ${i} ends on a refused new connection`)
      assert.equal(x.lastConnection, 'close', `client ${i}: last response says Connection: close`)
    }
    assert.equal(app.drain.rejected, 0)
    assert.equal(app.drain.destroyed, 0)
  })
}
