// A bare node:cluster primary, the floor: forks 2 workers serving plain node:http, nothing else.
import cluster from 'node:cluster'
import http from 'node:http'
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork()
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers ?? {})) w?.kill(); process.exit(0) })
} else {
  http.createServer((_req, res) => res.end(JSON.stringify({ pid: process.pid }))).listen(Number(process.env.PORT), '127.0.0.1')
}
