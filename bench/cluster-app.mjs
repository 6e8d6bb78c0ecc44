// The same hello-world Fastify app under two supervisors, for bench/cluster.mjs:
//   node cluster-app.mjs nclust   # @nclust/fastify-cluster (drain registered by default); SIGHUP = rolling reload
//   node cluster-app.mjs bare     # plain node:cluster, the usual recipe; SIGHUP = fork new, then old.disconnect(), kill after 2 s
//   node cluster-app.mjs nclust-defaults  # nclust with every default (pino logger at info, watchdog, hang capture on-hang, drain)
//   node cluster-app.mjs bare-thread      # bare, plus one idle worker thread per worker: what any thread costs
// Prints "READY <port>" once both workers listen. PORT and WORKERS from env.
import cluster from 'node:cluster'
import Fastify from 'fastify'
import { startClustered } from '@nclust/fastify-cluster'

const mode = process.argv[2]
const port = Number(process.env.PORT ?? 0)
const workers = Number(process.env.WORKERS ?? 2)

function app (extra = {}) {
  const a = Fastify({ logger: false, ...extra })
  a.get('/', async () => ({ hello: 'world' }))
  return a
}

if (mode === 'nclust-defaults') {
  const handle = await startClustered(() => app(), { workers, port, host: '127.0.0.1' })
  if (handle.role === 'primary') {
    await handle.ready()
    process.stdout.write(`READY ${port}\n`)
    handle.events.on('reload', (e) => { if (e.phase === 'done') process.stdout.write(`RELOADED ${JSON.stringify(e)}\n`) })
  }
} else if (mode === 'nclust') {
  const handle = await startClustered(() => app({ return503OnClosing: false }), { workers, port, host: '127.0.0.1', logger: false })
  if (handle.role === 'primary') {
    await handle.ready()
    process.stdout.write(`READY ${port}\n`)
    handle.events.on('reload', (e) => { if (e.phase === 'done') process.stdout.write(`RELOADED ${JSON.stringify(e)}\n`) })
  }
} else if (mode === 'bare' || mode === 'bare-thread') {
  if (cluster.isPrimary) {
    let listening = 0
    for (let i = 0; i < workers; i++) cluster.fork().once('listening', () => { if (++listening === workers) process.stdout.write(`READY ${port}\n`) })
    process.on('SIGHUP', async () => {
      for (const old of Object.values(cluster.workers)) {
        const next = cluster.fork()
        await new Promise((resolve) => next.once('listening', resolve))
        old.disconnect()
        setTimeout(() => old.process.kill('SIGKILL'), 2000).unref()
        await new Promise((resolve) => old.once('exit', resolve))
      }
      process.stdout.write('RELOADED {}\n')
    })
    // Profiling (bench/cluster.mjs CLUSTER_BENCH_PROFILE): workers must exit on their own to write their profile.
    const profiling = process.env.CLUSTER_BENCH_PROFILE !== undefined
    process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.process.kill(profiling ? 'SIGTERM' : 'SIGKILL'); process.exit(0) })
  } else {
    await app().listen({ port, host: '127.0.0.1' })
    if (process.env.CLUSTER_BENCH_PROFILE !== undefined) process.on('SIGTERM', () => process.exit(0))
    if (mode === 'bare-thread') {
      const { Worker } = await import('node:worker_threads')
      new Worker('setInterval(() => {}, 1e9)', { eval: true, env: {}, stdout: false, stderr: false }).unref()
    }
  }
} else {
  console.error('usage: node cluster-app.mjs nclust|bare')
  process.exit(2)
}
