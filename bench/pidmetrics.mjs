// Cost of @nclust/fastify-pidmetrics per request: hello-world throughput and server CPU per request,
// variants alternating round by round in one run, the server pinned to core 0 and the load generator
// (this process, autocannon in-process) to core 1.
//
//   node bench/pidmetrics.mjs                     # bare vs pidmetrics, 4 rounds of 5 s
//   VARIANTS=all node bench/pidmetrics.mjs        # + empty-hook, pidmetrics-no-default, prom-histogram, fastify-metrics
//   ROUNDS=6 DURATION=8 CONNECTIONS=50 node bench/pidmetrics.mjs
//
// Build first (pnpm --filter @nclust/fastify-pidmetrics build): the server imports the built package.
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { cpus, loadavg } from 'node:os'
import autocannon from 'autocannon'
import { request } from 'undici'

const here = fileURLToPath(new URL('.', import.meta.url))
const ROUNDS = Number(process.env.ROUNDS ?? 4)
const DURATION = Number(process.env.DURATION ?? 5)
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 50)
const VARIANTS = process.env.VARIANTS === 'all'
  ? ['bare', 'pidmetrics', 'empty-hook', 'pidmetrics-no-default', 'prom-histogram', 'fastify-metrics']
  : (process.env.VARIANTS ?? 'bare,pidmetrics').split(',')

const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0
if (hasTaskset && process.env.PIDMETRICS_BENCH_PINNED !== '1') {
  // Re-run this driver pinned to core 1 (the load generator), then exit with its code.
  const r = spawnSync('taskset', ['-c', '1', process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit', env: { ...process.env, PIDMETRICS_BENCH_PINNED: '1' }
  })
  process.exit(r.status ?? 1)
}
if (!hasTaskset) console.warn('taskset not found: server and load are NOT pinned; numbers are noisier')

async function startServer (variant) {
  const cmd = hasTaskset ? 'taskset' : process.execPath
  const args = hasTaskset ? ['-c', '0', process.execPath, `${here}pidmetrics-server.mjs`, variant] : [`${here}pidmetrics-server.mjs`, variant]
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: here })
  const port = await new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`${variant}: no READY within 20 s`)), 20_000)
    child.stdout.on('data', (d) => {
      buf += d
      const m = /READY (\d+)/.exec(buf)
      if (m) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${variant} exited ${code}`)) })
  })
  return { child, port }
}

async function cpu (port) {
  const res = await request(`http://127.0.0.1:${port}/__cpu`)
  return (await res.body.json()).us
}

function load (port, seconds) {
  return new Promise((resolve, reject) => {
    autocannon({ url: `http://127.0.0.1:${port}/`, connections: CONNECTIONS, duration: seconds }, (err, result) => err ? reject(err) : resolve(result))
  })
}

async function runOnce (variant) {
  const { child, port } = await startServer(variant)
  try {
    await load(port, 1) // warm-up: JIT, connection setup
    const before = await cpu(port)
    const r = await load(port, DURATION)
    const after = await cpu(port)
    const requests = r.requests.total
    return { rps: requests / DURATION, cpuUsPerReq: (after - before) / requests, errors: r.errors + r.non2xx }
  } finally {
    child.kill('SIGTERM')
    await new Promise((resolve) => { if (child.exitCode !== null) resolve(); else child.once('exit', resolve) })
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
const results = Object.fromEntries(VARIANTS.map((v) => [v, []]))
console.log(`pidmetrics bench: ${ROUNDS} rounds x ${DURATION} s, ${CONNECTIONS} connections, variants ${VARIANTS.join(', ')}, pinned=${hasTaskset}`)
for (let round = 0; round < ROUNDS; round++) {
  // Alternate the order each round so drift (thermal, other tenants) does not favour one variant.
  const order = round % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()
  for (const v of order) {
    const r = await runOnce(v)
    results[v].push(r)
    console.log(`round ${round + 1} ${v.padEnd(22)} ${r.rps.toFixed(0).padStart(7)} req/s  ${r.cpuUsPerReq.toFixed(1).padStart(6)} µs CPU/req${r.errors ? `  errors=${r.errors}` : ''}`)
  }
}

const base = VARIANTS[0]
const sign = (x) => (x >= 0 ? '+' : '') + x.toFixed(1)
// Paired per round: each variant against the baseline of the same round (run back to back), then the
// median over rounds; on a shared machine this cancels most of the drift between rounds. "best" is the
// lowest CPU/req of any round: the round least disturbed by other tenants.
console.log(`\n${'variant'.padEnd(22)} ${'req/s'.padStart(7)}  ${'ratio'.padStart(5)}  ${'µs CPU/req'.padStart(10)}  ${'Δ µs'.padStart(6)}  ${'best µs'.padStart(7)}   (medians of per-round pairs vs ${base})`)
for (const v of VARIANTS) {
  const rps = median(results[v].map((r) => r.rps))
  const us = median(results[v].map((r) => r.cpuUsPerReq))
  const ratio = median(results[v].map((r, i) => r.rps / results[base][i].rps))
  const delta = median(results[v].map((r, i) => r.cpuUsPerReq - results[base][i].cpuUsPerReq))
  const best = Math.min(...results[v].map((r) => r.cpuUsPerReq))
  console.log(`${v.padEnd(22)} ${rps.toFixed(0).padStart(7)}  ${ratio.toFixed(2).padStart(4)}x  ${us.toFixed(1).padStart(10)}  ${sign(delta).padStart(6)}  ${best.toFixed(1).padStart(7)}`)
}
const avg = loadavg()
console.log(`\nload average at the end: ${avg.map((x) => x.toFixed(2)).join(' ')} on ${cpus().length} cores${avg[0] > 2.5 ? ' (busy machine: other tenants; treat ratios as rough)' : ''}`)
