// A bare node:cluster primary, the floor: forks 2 workers serving plain node:http, nothing else.
// Only the workers load node:http: on Node 22+ an ESM import of it also loads undici (its lazy
// WebSocket getter), ~10 MB a primary does not need, which would flatter every ratio to this floor.
import cluster from 'node:cluster'
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork()
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers ?? {})) w?.kill(); process.exit(0) })
} else {
  const { createServer } = await import('node:http')
  createServer((_req, res) => res.end(JSON.stringify({ pid: process.pid }))).listen(Number(process.env.PORT), '127.0.0.1')
}
