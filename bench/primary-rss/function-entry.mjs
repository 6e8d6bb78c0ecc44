// The same app given as a function: the entry script, and so the primary, imports Fastify.
import Fastify from 'fastify'
import { startClustered } from '@nclust/fastify-cluster'
await startClustered(() => {
  const app = Fastify()
  app.get('/', async () => ({ pid: process.pid }))
  return app
}, { workers: 2 })
