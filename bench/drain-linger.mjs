// The linger trade-off, measured: N keep-alive clients hammer a server (own process) that
// closes mid-load. Counts what the clients lost (resets, 503s) and how long close() took,
// for several linger values and for Fastify without the plugin.
// Run from the repo root after building: node bench/drain-linger.mjs [trials=5] [clients=50] [think ms=0]
// With think > 0 each client pauses a random 0..think ms between requests (a browser-like mix).
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from 'undici'

const trials = Number(process.argv[2] ?? 5)
const clients = Number(process.argv[3] ?? 50)
const think = Number(process.argv[4] ?? 0)
const server = new URL('./drain-server.mjs', import.meta.url)

const configs = [
  ['fastify-default', {}, 'Fastify, return503OnClosing: true (default), no plugin'],
  ['plain', {}, 'Fastify, return503OnClosing: false, no plugin'],
  ['drain', { linger: 0 }, 'plugin, linger 0'],
  ['drain', { linger: 10 }, 'plugin, linger 10'],
  ['drain', { linger: 50 }, 'plugin, linger 50'],
  ['drain', { linger: 250 }, 'plugin, linger 250 (default)']
]

async function trial (mode, opts) {
  const child = fork(server, [mode, JSON.stringify(opts)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = once(child, 'exit') // listen now: the child may be gone before the clients stop
  const [{ port }] = await once(child, 'message')
  const tally = { ok: 0, s503: 0, lost: {}, refused: 0 }
  const state = { stop: false }
  const loops = Array.from({ length: clients }, async () => {
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1, keepAliveTimeout: 60_000 })
    while (!state.stop) {
      try {
        const res = await client.request({ path: '/', method: 'GET' })
        await res.body.text()
        if (res.statusCode === 200) tally.ok++
        else if (res.statusCode === 503) tally.s503++
        if (think > 0) await sleep(Math.random() * think)
      } catch (err) {
        const code = err.code ?? String(err)
        if (code === 'ECONNREFUSED') { tally.refused++; break }
        tally.lost[code] = (tally.lost[code] ?? 0) + 1
      }
    }
    await client.destroy()
  })
  await sleep(1000) // load for a second, then close mid-load (the scenario, not a synchronisation)
  child.send('close')
  const [result] = await once(child, 'message')
  const guard = setTimeout(() => { state.stop = true }, 10_000)
  await Promise.all(loops)
  clearTimeout(guard)
  await exited
  return { ...tally, closeMs: result.ms }
}

for (const [mode, opts, label] of configs) {
  const rows = []
  for (let i = 0; i < trials; i++) rows.push(await trial(mode, opts))
  const lost = rows.map((r) => Object.values(r.lost).reduce((a, b) => a + b, 0))
  const codes = [...new Set(rows.flatMap((r) => Object.keys(r.lost)))].join(',') || '-'
  const s503 = rows.map((r) => r.s503)
  const ms = rows.map((r) => r.closeMs)
  console.log(`${label.padEnd(55)} resets/trial ${JSON.stringify(lost)} (${codes}) 503s/trial ${JSON.stringify(s503)} close ms ${JSON.stringify(ms)}`)
}
