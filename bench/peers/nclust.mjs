// @nclust/fastify-cluster with 2 workers (drain registered by default), a default Fastify() app given
// as a module, the lean form: the primary never imports Fastify or the app.
// SIGHUP: rolling reload; SIGTERM: graceful shutdown.
import { startClustered } from '@nclust/fastify-cluster'

const handle = await startClustered(new URL('./nclust-app.mjs', import.meta.url), {
  workers: Number(process.env.WORKERS ?? 2), port: Number(process.env.PORT), host: '127.0.0.1', logger: false, shutdownTimeout: 10000
})
if (handle.role === 'primary') {
  await handle.ready()
  process.stdout.write(`READY ${process.env.PORT}\n`)
  handle.events.on('reload', (e) => { if (e.phase === 'done') process.stdout.write(`RELOADED ${JSON.stringify(e)}\n`) })
}
