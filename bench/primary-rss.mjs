// Primary memory: RSS (and private memory, USS) of the primary process once its 2 workers serve,
// for a bare node:cluster primary, nclust with the app as a function (the entry imports Fastify),
// nclust with the app as a module (`nclust start`), and the example API started the lean way (it
// needs the local Postgres and Redis, as its tests do). Rounds alternate the variants; medians.
// RSS counts the pages of the node binary this process touched, shared with every other node
// process; USS (Private_Clean + Private_Dirty from /proc/<pid>/smaps_rollup) is what it alone costs.
// Usage: node bench/primary-rss.mjs [rounds=3]
import { spawn } from 'node:child_process'
import { readFileSync, realpathSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const rounds = Number(process.argv[2] ?? 3)
const here = (p) => fileURLToPath(new URL(p, import.meta.url))
const nclust = here('../packages/fastify-cluster/bin/nclust.js')
const env = { PATH: process.env.PATH, WORKER_COUNT: '2', HOST: '127.0.0.1', NCLUST_LOG_FORMAT: 'json', LOG_LEVEL: 'warn' }
// The example's own services, as its tests reach them (DATABASE_URL/REDIS_URL are required by it).
const services = {
  DATABASE_URL: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
  REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
}
const variants = {
  'bare node:cluster': { args: [here('primary-rss/bare.mjs')] },
  'nclust, app as a function': { args: [here('primary-rss/function-entry.mjs')] },
  'nclust start (app as a module)': { args: [nclust, 'start', here('primary-rss/hello-app.mjs')] },
  'example API (lean, METRICS_PORT=off)': {
    args: [here('../examples/clustered-api/dist/server.js')],
    env: { ...services, PG_SCHEMA: 'bench_rss', REDIS_PREFIX: 'bench_rss:', JWT_SECRET: 'bench-secret-bench-secret-bench-secret!!', METRICS_PORT: 'off' }
  },
  'example API (lean, with cluster metrics)': {
    args: [here('../examples/clustered-api/dist/server.js')],
    env: { ...services, PG_SCHEMA: 'bench_rss', REDIS_PREFIX: 'bench_rss:', JWT_SECRET: 'bench-secret-bench-secret-bench-secret!!', METRICS_HOST: '127.0.0.1' },
    metricsPort: true
  },
  // A primary lives for weeks under a scrape every 15-30 s: what each scrape leaves behind, V8 keeps
  // (its young generation grows and stays grown), so the first-scrape figure alone would flatter it.
  'example API (lean, with cluster metrics, after 100 scrapes)': {
    args: [here('../examples/clustered-api/dist/server.js')],
    env: { ...services, PG_SCHEMA: 'bench_rss', REDIS_PREFIX: 'bench_rss:', JWT_SECRET: 'bench-secret-bench-secret-bench-secret!!', METRICS_HOST: '127.0.0.1' },
    metricsPort: true,
    scrapes: 100
  }
}

function freePort () {
  return new Promise((resolve) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) }) })
}

async function distinctPids (port, want, deadline) {
  const pids = new Set()
  while (Date.now() < deadline && pids.size < want) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } })
      const body = await res.text()
      const pid = Number(res.headers.get('x-pid') ?? JSON.parse(body).pid)
      if (Number.isInteger(pid)) pids.add(pid)
    } catch { await sleep(100) }
  }
  return pids
}

const nodeBinary = realpathSync(process.execPath)

function memory (pid) {
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])
  const smaps = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
  const field = (name) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(smaps)[1])
  // Pages of the node executable this process touched: code shared with every node process (the
  // workers included), counted in RSS, not in USS. Which of V8's tiers ran (the optimizing compiler
  // is ~4 MB of it on Node 20) moves this figure more than anything the primary allocates.
  let binary = 0
  let inBinary = false
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (mapping !== null) inBinary = mapping[1] === nodeBinary
    else if (inBinary && line.startsWith('Rss:')) binary += Number(/(\d+)/.exec(line)[1])
  }
  return { rss: rss / 1024, uss: (field('Private_Clean') + field('Private_Dirty')) / 1024, binary: binary / 1024 }
}

async function measure (variant) {
  const port = await freePort()
  const extra = { ...variant.env, PORT: String(port) }
  if (variant.metricsPort) extra.METRICS_PORT = String(await freePort())
  const child = spawn(process.execPath, variant.args, { env: { ...env, ...extra }, stdio: ['ignore', 'ignore', 'inherit'] })
  try {
    const pids = await distinctPids(port, 2, Date.now() + 60000)
    if (pids.size < 2) throw new Error(`${variant.args.join(' ')}: 2 workers did not answer within 60 s`)
    for (let i = 0; variant.metricsPort && i < (variant.scrapes ?? 1); i++) {
      await fetch(`http://127.0.0.1:${extra.METRICS_PORT}/metrics`).then((r) => r.text())
    }
    await sleep(2000) // let start-up garbage settle, as a long-running primary would
    return memory(child.pid)
  } finally {
    child.kill('SIGTERM')
    await new Promise((resolve) => child.once('exit', resolve))
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const results = Object.fromEntries(Object.keys(variants).map((k) => [k, []]))
for (let r = 0; r < rounds; r++) {
  for (const [name, variant] of Object.entries(variants)) results[name].push(await measure(variant))
}
const bare = median(results['bare node:cluster'].map((m) => m.rss))
const bareUss = median(results['bare node:cluster'].map((m) => m.uss))
console.log(`primary memory, 2 workers, median of ${rounds} alternating rounds (node ${process.version})\n`)
console.log('| primary | RSS MB | × bare RSS | of it, node binary MB | USS MB | × bare USS |')
console.log('|---|---|---|---|---|---|')
for (const [name, ms] of Object.entries(results)) {
  const rss = median(ms.map((m) => m.rss))
  const uss = median(ms.map((m) => m.uss))
  const binary = median(ms.map((m) => m.binary))
  if (name !== 'bare node:cluster') {
    const goal = /nclust start|example API \(lean, METRICS_PORT=off\)/.test(name) ? '<= 1.10' : ''
    console.log(`RATIO\tprimary RSS, ${name} / bare (Node ${process.version})\t${(rss / bare).toFixed(2)}\t${goal}\t`)
    console.log(`RATIO\tprimary USS, ${name} / bare (Node ${process.version})\t${(uss / bareUss).toFixed(2)}\t${goal}\t`)
  }
  console.log(`| ${name} | ${rss.toFixed(1)} | ${(rss / bare).toFixed(2)} | ${binary.toFixed(1)} | ${uss.toFixed(1)} | ${(uss / bareUss).toFixed(2)} |`)
}
