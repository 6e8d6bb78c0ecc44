// The naive node:cluster version: fork 2 workers, each listens. No restart, no signal handling.
import cluster from 'node:cluster'
import { buildApp } from './app.mjs'

const workers = Number(process.env.WORKERS ?? 2)
if (cluster.isPrimary) {
  let listening = 0
  for (let i = 0; i < workers; i++) cluster.fork().once('listening', () => { if (++listening === workers) process.stdout.write(`READY ${process.env.PORT}\n`) })
} else {
  await buildApp().listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
}
