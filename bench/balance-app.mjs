// Hello world under @nclust/fastify-cluster with the balancing mode from argv, for bench/balance.mjs:
//   node balance-app.mjs primary|kernel
// Prints "READY <json>" with the primary's and workers' pids once every worker is ready, and on SIGUSR2
// "COUNTS <json>": requests served so far by each worker (asked over the IPC request channel).
import Fastify from 'fastify'
import { startClustered, onPrimaryRequest } from '@nclust/fastify-cluster'

const balance = process.argv[2]
let served = 0
onPrimaryRequest('served', () => ({ pid: process.pid, served }))

const handle = await startClustered(() => {
  const app = Fastify({ logger: false }) // a default app: the worker drains before it closes
  app.get('/', async () => { served++; return { hello: 'world' } })
  return app
}, { workers: Number(process.env.WORKERS ?? 2), port: Number(process.env.PORT), host: '127.0.0.1', balance, logger: false })

if (handle.role === 'primary') {
  await handle.ready()
  process.stdout.write(`READY ${JSON.stringify({ primary: process.pid, workers: handle.workers().map((w) => w.pid) })}\n`)
  handle.events.on('reload', (e) => { if (e.phase === 'done') process.stdout.write(`RELOADED ${JSON.stringify({ ...e, workers: handle.workers().filter((w) => w.state === 'ready').map((w) => w.pid) })}\n`) })
  process.on('SIGUSR2', async () => {
    const all = await handle.requestAll('served', undefined, { timeout: 5000 })
    process.stdout.write(`COUNTS ${JSON.stringify(Object.fromEntries(all.map((r) => [r.pid, r.ok ? r.value.served : -1])))}\n`)
  })
}
