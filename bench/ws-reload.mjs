// How long a rolling reload (SIGHUP, 2 workers) takes with N WebSocket clients connected, and what
// the clients see: close codes, and when every one of them is back on the new generation.
//
//   node bench/ws-reload.mjs [clients=100] [trials=1]
//
// The clients reconnect on close, like a browser app. Before the drain spoke WebSocket, a reload
// waited for the drain's deadline (shutdownTimeout minus min(5 s, 10 %), 25 s by default) per
// worker and clients got 1006/1005; now each old worker closes them with 1012 at once.
// Build first (pnpm build). The same file is the clustered app (BENCH_WS_APP=1) and the driver.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

if (process.env.BENCH_WS_APP === '1') {
  const { default: Fastify } = await import('fastify')
  const { default: websocket } = await import('@fastify/websocket')
  const { startClustered } = await import('@nclust/fastify-cluster')
  const handle = await startClustered(async (ctx) => {
    const app = Fastify({ logger: false }) // a default app
    await app.register(websocket)
    app.get('/ws', { websocket: true }, (socket) => {
      socket.send(JSON.stringify({ generation: ctx.generation }))
      socket.on('message', (data) => socket.send(data))
    })
    return app
  }, { workers: 2, port: Number(process.env.PORT), host: '127.0.0.1', logger: false })
  if (handle.role === 'primary') {
    await handle.ready()
    process.stdout.write('READY\n')
    handle.events.on('reload', (e) => { if (e.phase === 'done') process.stdout.write(`RELOADED ${JSON.stringify(e)}\n`) })
  }
} else {
  const { default: WebSocket } = await import('ws')
  const clients = Number(process.argv[2] ?? 100)
  const trials = Number(process.argv[3] ?? 1)
  const freePort = () => new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
  const until = async (pred, ms, what) => {
    const t0 = Date.now()
    while (!pred()) {
      if (Date.now() - t0 > ms) throw new Error(`no ${what} within ${ms} ms`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
  for (let trial = 0; trial < trials; trial++) {
    const port = await freePort()
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], { env: { ...process.env, BENCH_WS_APP: '1', PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    try {
      await until(() => out.includes('READY\n'), 60_000, 'READY')
      const codes = new Map()
      const conns = []
      const open = (i) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
        conns[i] = { ws, generation: -1 }
        ws.on('error', () => {})
        ws.on('message', (d) => { const m = JSON.parse(d); if (m.generation !== undefined) conns[i].generation = m.generation })
        ws.once('close', (code) => { codes.set(code, (codes.get(code) ?? 0) + 1); if (!conns.stop) open(i) })
      }
      for (let i = 0; i < clients; i++) open(i)
      await until(() => conns.every((c) => c.generation === 0), 30_000, 'clients connected')
      const t0 = Date.now()
      child.kill('SIGHUP')
      await until(() => out.includes('RELOADED '), 300_000, 'reload done')
      const reloaded = Date.now() - t0
      await until(() => conns.every((c) => c.generation === 1 && c.ws.readyState === WebSocket.OPEN), 300_000, 'clients on the new generation')
      const back = Date.now() - t0
      conns.stop = true
      for (const c of conns) c.ws.terminate()
      console.log(JSON.stringify({ clients, reloadMs: reloaded, allClientsBackMs: back, closeCodes: Object.fromEntries(codes) }))
    } finally {
      child.kill('SIGTERM')
      await once(child, 'exit')
    }
  }
}
