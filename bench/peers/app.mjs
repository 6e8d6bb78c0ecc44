// The one app every variant of bench/compare.mjs serves, so only the supervisor differs:
//   GET /      hello world
//   GET /cpu   ~1 ms of CPU work on the event loop: a fixed 1000 chained SHA-256 rounds (~1 ms here),
//              the same work in every variant
//   GET /io    awaits 50 ms (a slow dependency) and answers: I/O-bound
//   GET /slow  awaits 1 s (the in-flight requests of the shutdown measurement)
//   GET /__id  which process and thread answered (the driver checks that every worker serves)
import { createHash } from 'node:crypto'
import { threadId } from 'node:worker_threads'
import Fastify from 'fastify'

export const CPU_ROUNDS = Number(process.env.BENCH_CPU_ROUNDS ?? 1000)

function burn (rounds) {
  let h = 'nclust'
  for (let i = 0; i < rounds; i++) h = createHash('sha256').update(h).digest('hex')
  return h.slice(0, 8)
}

export function routes (app) {
  app.get('/', async () => ({ hello: 'world' }))
  app.get('/cpu', async () => ({ h: burn(CPU_ROUNDS) }))
  app.get('/io', async () => {
    await new Promise((resolve) => setTimeout(resolve, 50))
    return { waited: 50 }
  })
  app.get('/slow', async () => {
    await new Promise((resolve) => setTimeout(resolve, 1000))
    return { waited: 1000 }
  })
  app.get('/__id', async () => ({ id: `${process.pid}/${threadId}` }))
  return app
}

/** A default Fastify app with the bench routes; `opts` merged into the Fastify options. */
export function buildApp (opts = {}) {
  return routes(Fastify({ logger: false, ...opts }))
}
