// Child process for the drain benchmarks: one Fastify hello-world server.
// argv: mode (drain | plain | fastify-default) and a JSON of drain options.
// Tells the parent { port } when listening; on 'cpu' answers { cpu } (µs used so far);
// on the message 'close' runs app.drainAndClose() with the plugin (a default app, as users write it),
// app.close() without
// and answers { closed, ms, drain } before exiting.
import Fastify from 'fastify'
import clusterDrain from '@nclust/fastify-drain'

const [mode = 'drain', json = '{}'] = process.argv.slice(2)
// Without the plugin, 'plain' is return503OnClosing: false and 'fastify-default' the default; with it, a default app.
const app = Fastify({ logger: false, ...(mode === 'plain' ? { return503OnClosing: false } : {}) })
if (mode === 'drain') await app.register(clusterDrain, JSON.parse(json))
app.get('/', async () => ({ hello: 'world' }))
await app.listen({ host: '127.0.0.1', port: 0 })
process.send({ port: app.server.address().port })
process.on('message', async (msg) => {
  if (msg === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send({ cpu: user + system })
    return
  }
  if (msg !== 'close') return
  const started = Date.now()
  await (mode === 'drain' ? app.drainAndClose() : app.close())
  const d = app.drain
  process.send({
    closed: true,
    ms: Date.now() - started,
    drain: d ? { idleClosed: d.idleClosed, rejected: d.rejected, destroyed: d.destroyed } : null
  }, () => process.exit(0))
})
