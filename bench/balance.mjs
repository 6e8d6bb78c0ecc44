// balance 'primary' (node:cluster round-robin through the primary) against balance 'kernel'
// (SO_REUSEPORT, a listener per worker) and balance 'sticky' (the primary hashes the client address),
// 2 workers each, in one run, rounds alternating:
//   - new connection per request (Connection: close), the case the primary's accept path costs most,
//     from 16 loopback addresses (127.0.0.2-17) so that sticky has addresses to spread;
//   - keep-alive (autocannon, one address: primary and kernel only, sticky would send it all to one worker).
// For each: req/s, server CPU per request (primary + workers, from /proc/<pid>/stat), the primary's
// CPU per connection and share of the server CPU, and the split of requests between the workers.
//
//   node bench/balance.mjs [rounds=4] [seconds=3] [connections=32]
//
// Build first (pnpm build). Needs Node 22.12+ on Linux; the load generator shares the machine's cores.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { kernelBalanceUnsupported } from '@nclust/fastify-cluster'

const why = kernelBalanceUnsupported()
if (why !== undefined) { console.log(`bench/balance.mjs skipped: ${why}`); process.exit(0) }

const here = fileURLToPath(new URL('.', import.meta.url))
const rounds = Number(process.argv[2] ?? 4)
const seconds = Number(process.argv[3] ?? 3)
const connections = Number(process.argv[4] ?? 32)
const reloadSeconds = Number(process.env.RELOAD_SECONDS ?? 6)

const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
})
/** utime + stime of a pid, in ms. */
function cpuMs (pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(' ')
  return (Number(f[11]) + Number(f[12])) * 10 // fields 14 and 15; USER_HZ 100
}

async function start (balance) {
  const port = await freePort()
  const child = spawn(process.execPath, [`${here}balance-app.mjs`, balance], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  const next = (tag, ms = 30000) => new Promise((resolve, reject) => {
    const t0 = Date.now()
    const iv = setInterval(() => {
      const i = out.indexOf(`${tag} `)
      if (i >= 0) {
        const end = out.indexOf('\n', i)
        if (end < 0) return
        const json = JSON.parse(out.slice(i + tag.length + 1, end))
        out = out.slice(end + 1)
        clearInterval(iv); resolve(json)
      } else if (Date.now() - t0 > ms) { clearInterval(iv); reject(new Error(`${balance}: no ${tag} within ${ms} ms`)) }
    }, 10)
  })
  const pids = await next('READY')
  const counts = async () => { child.kill('SIGUSR2'); return await next('COUNTS') }
  return { balance, port, child, pids, counts, next }
}

/** `connections` loops, each a fresh TCP connection per request (Connection: close), for `seconds`. */
function closeLoad (port, secs) {
  const agent = false
  const until = Date.now() + secs * 1000
  let ok = 0; let errors = 0
  const one = (localAddress) => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent, localAddress, headers: { connection: 'close' } }, (res) => {
      res.resume(); res.on('end', () => { if (res.statusCode === 200) ok++; else errors++; resolve() })
    })
    req.on('error', () => { errors++; resolve() })
    req.setTimeout(10000, () => req.destroy(new Error('no answer within 10 s'))) // counted as lost
  })
  const loop = async (_, i) => { const localAddress = `127.0.0.${2 + (i % 16)}`; while (Date.now() < until) await one(localAddress) }
  const t0 = Date.now()
  return Promise.all(Array.from({ length: connections }, loop)).then(() => ({ requests: ok, errors, rps: ok / ((Date.now() - t0) / 1000) }))
}
const keepAliveLoad = (port, secs) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections, duration: secs }, (err, r) => err
    ? reject(err)
    : resolve({ requests: r.requests.total, errors: r.errors + r.timeouts + r.non2xx, rps: r.requests.total / secs }))
})

async function measure (c, load) {
  const all = [c.pids.primary, ...c.pids.workers]
  const cpu0 = all.map(cpuMs); const n0 = await c.counts()
  const r = await load(c.port, seconds)
  const cpu1 = all.map(cpuMs); const n1 = await c.counts()
  const cpu = cpu1.map((v, i) => v - cpu0[i])
  const total = cpu.reduce((a, b) => a + b, 0)
  const perWorker = c.pids.workers.map((pid) => (n1[pid] ?? 0) - (n0[pid] ?? 0))
  const served = perWorker.reduce((a, b) => a + b, 0)
  return {
    rps: r.rps,
    errors: r.errors,
    usPerReq: (total * 1000) / Math.max(1, r.requests),
    primaryShare: total > 0 ? cpu[0] / total : 0,
    primaryUsPerReq: (cpu[0] * 1000) / Math.max(1, r.requests),
    split: perWorker.map((n) => n / Math.max(1, served))
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const pct = (x) => `${(x * 100).toFixed(0)}%`

const clusters = { primary: await start('primary'), kernel: await start('kernel'), sticky: await start('sticky') }
const modesOf = (name) => name === 'keep-alive' ? ['primary', 'kernel'] : ['primary', 'kernel', 'sticky']
try {
  for (const [name, load] of [['Connection: close', closeLoad], ['keep-alive', keepAliveLoad]]) {
    const modes = modesOf(name)
    for (const mode of modes) await load(clusters[mode].port, 1) // warm up
    const rows = Object.fromEntries(modes.map((m) => [m, []]))
    for (let i = 0; i < rounds; i++) {
      const order = modes.slice(i % modes.length).concat(modes.slice(0, i % modes.length)) // rotate who goes first
      for (const mode of order) rows[mode].push(await measure(clusters[mode], load))
      console.log(`${name} round ${i + 1}: ${modes.map((m) => `${m} ${rows[m].at(-1).rps.toFixed(0)} req/s`).join(', ')}`)
    }
    for (const mode of modes) {
      const r = rows[mode]
      const split = r.map((x) => Math.max(...x.split))
      console.log(`${name}, balance ${mode}: median ${median(r.map((x) => x.rps)).toFixed(0)} req/s, ` +
        `${median(r.map((x) => x.usPerReq)).toFixed(1)} µs server CPU/request, primary ${median(r.map((x) => x.primaryUsPerReq)).toFixed(1)} µs/request ` +
        `(${pct(median(r.map((x) => x.primaryShare)))} of server CPU), ` +
        `busiest worker ${pct(median(split))} of requests (worst round ${pct(Math.max(...split))}), errors ${r.reduce((a, x) => a + x.errors, 0)}`)
    }
    for (const mode of modes.filter((m) => m !== 'primary')) {
      const ratios = rows[mode].map((x, i) => x.rps / rows.primary[i].rps)
      const cpuRatios = rows[mode].map((x, i) => x.primaryUsPerReq / Math.max(1e-9, rows.primary[i].primaryUsPerReq))
      console.log(`${name}: ${mode} / primary, median over ${rounds} rounds: req/s ${median(ratios).toFixed(3)}, primary CPU per connection ${median(cpuRatios).toFixed(3)}`)
    }
  }
  // A rolling reload (SIGHUP) under each load: with 'kernel' every old worker closes its own listener.
  for (const [name, load] of [['Connection: close', closeLoad], ['keep-alive', keepAliveLoad]]) {
    for (const mode of modesOf(name)) {
      const c = clusters[mode]
      const run = load(c.port, reloadSeconds)
      setTimeout(() => c.child.kill('SIGHUP'), 1500)
      const r = await run
      const done = await c.next('RELOADED')
      c.pids.workers = done.workers
      console.log(`reload under ${connections} ${name} clients, balance ${mode}: ${r.requests} ok, ${r.errors} lost (reload ok ${done.ok}, ${done.ms} ms)`)
    }
  }
} finally {
  for (const c of Object.values(clusters)) c.child.kill('SIGTERM')
}
