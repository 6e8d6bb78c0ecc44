// The same Fastify app under nclust and under PM2, for bench/lifecycle.mjs.
//   node lifecycle-app.mjs nclust          # startClustered, 2 workers; SIGHUP = rolling reload; MAX_RSS from env
//   pm2 start lifecycle-app.mjs -i 2 -- pm2  # one process per PM2 cluster worker, graceful on SIGINT as PM2's docs advise
// GET /work?ms=50 answers after ms (an I/O-bound handler: a database call); GET /alloc?mb=N keeps N MB (a leak).
// In nclust mode the primary prints JSON lines: READY, then RELOADED / RECYCLED with the event.
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { startClustered } from '@nclust/fastify-cluster'

const mode = process.argv[2]
const port = Number(process.env.PORT ?? 3000)
const retained = []

function app () {
  const a = Fastify({ logger: false })
  a.get('/work', async (req) => {
    await sleep(Number(req.query.ms ?? 50))
    return { pid: process.pid }
  })
  a.get('/alloc', async (req) => {
    retained.push(Buffer.alloc(Number(req.query.mb ?? 10) * 1024 * 1024, 1))
    return { pid: process.pid, rss: process.memoryUsage.rss() }
  })
  return a
}

const say = (msg, extra = {}) => process.stdout.write(JSON.stringify({ msg, ...extra }) + '\n')

if (mode === 'nclust') {
  const handle = await startClustered(app, { workers: 2, port, host: '127.0.0.1', logger: { level: 'warn' } })
  if (handle.role === 'primary') {
    await handle.ready()
    say('READY')
    handle.events.on('reload', (e) => { if (e.phase === 'done') say('RELOADED', e) })
    handle.events.on('worker-exit', (e) => { if (e.reason === 'recycle') say('RECYCLED', e) })
  }
} else if (mode === 'pm2') {
  const a = app()
  await a.listen({ port, host: '127.0.0.1' })
  process.on('SIGINT', () => { a.close().then(() => process.exit(0)) })
  process.send?.('ready') // with --wait-ready PM2 waits for this before it stops the old process
} else {
  throw new Error('usage: node lifecycle-app.mjs nclust|pm2')
}
