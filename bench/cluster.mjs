// nclust's supervisor against plain node:cluster, in one run, on this machine:
// 1. hello-world throughput, 2 workers each, nclust with every default (logger, watchdog, drain),
//    rounds alternating: req/s ratio (median, with every round's ratio: the spread) and the server's
//    CPU per request (primary + workers, every thread, from /proc). With taskset, both clusters are
//    pinned to core 0 and this process (the load generator) to core 1;
// 2. a rolling reload under keep-alive load: how many requests each loses.
//
//   node bench/cluster.mjs [rounds=6] [seconds=3] [connections=50]
//   CLUSTER_BENCH_PROFILE=dir  also runs each cluster's workers with --cpu-prof into dir (see bench/README.md)
//
// Build first (pnpm build). Both clusters stay up for the whole run; only one is loaded at a time.
import { spawn, spawnSync } from 'node:child_process'
import { createServer } from 'node:net'
import { availableParallelism } from 'node:os'
import { mkdirSync, writeFileSync } from 'node:fs'
import { treeCpuUs } from './peers/procs.mjs'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const here = fileURLToPath(new URL('.', import.meta.url))
const rounds = Number(process.argv[2] ?? 6)
const seconds = Number(process.argv[3] ?? 3)
const connections = Number(process.argv[4] ?? 50)
const pin = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && availableParallelism() >= 2
if (pin) spawnSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' })
const profileDir = process.env.CLUSTER_BENCH_PROFILE

function freePort () {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

async function start (mode, label = mode) {
  const port = await freePort()
  const node = [process.execPath, ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}/${label}`] : []), `${here}cluster-app.mjs`, mode]
  const [cmd, ...args] = pin ? ['taskset', '-c', '0', ...node] : node
  const child = spawn(cmd, args, { env: { ...process.env, PORT: String(port), WORKERS: '2', NCLUST_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  const waitFor = (re, ms) => new Promise((resolve, reject) => {
    const t0 = Date.now()
    const iv = setInterval(() => {
      const m = re.exec(out)
      if (m) { clearInterval(iv); resolve(m) } else if (Date.now() - t0 > ms) { clearInterval(iv); reject(new Error(`${mode}: no ${re} within ${ms} ms`)) }
    }, 20)
  })
  await waitFor(/READY/, 30000)
  return { mode: label, port, child, waitFor, reset: () => { out = '' } }
}

const load = (port, duration) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections, duration }, (err, r) => err ? reject(err) : resolve(r))
})
/** One row of the summary table `pnpm bench` (run.mjs) prints at the end. */
const ratio = (name, value, goal, spread = '') => console.log(`RATIO\t${name}\t${value}\t${goal}\t${spread}`)
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

const nclust = await start('nclust-defaults', 'nclust')
const bare = await start('bare')
try {
  await load(nclust.port, 1); await load(bare.port, 1) // warm up
  const ratios = []
  const extraUs = []
  const per = { nclust: [], bare: [] }
  const served = { nclust: 0, bare: 0 }
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? [nclust, bare] : [bare, nclust]
    const r = {}
    for (const c of order) {
      const cpu0 = treeCpuUs(c.child.pid)
      const res = await load(c.port, seconds)
      const cpu = treeCpuUs(c.child.pid) - cpu0
      r[c.mode] = { rps: res.requests.total / seconds, cpuUs: cpu / res.requests.total }
      served[c.mode] += res.requests.total
      per[c.mode].push(r[c.mode])
    }
    ratios.push(r.nclust.rps / r.bare.rps)
    extraUs.push(r.nclust.cpuUs - r.bare.cpuUs)
    console.log(`round ${i + 1}: nclust ${r.nclust.rps.toFixed(0)} req/s ${r.nclust.cpuUs.toFixed(1)} µs/req, bare node:cluster ${r.bare.rps.toFixed(0)} req/s ${r.bare.cpuUs.toFixed(1)} µs/req, ratio ${(r.nclust.rps / r.bare.rps).toFixed(3)}`)
  }
  const range = (xs, d = 3) => `${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)}`
  console.log(`${pin ? 'pinned: servers on core 0, load generator on core 1' : 'NOT pinned (no taskset)'}; ${rounds} alternating rounds of ${seconds} s, ${connections} connections`)
  console.log(`throughput nclust (every default) / bare node:cluster: median ${median(ratios).toFixed(3)} (rounds ${range(ratios)}); ` +
    `req/s nclust ${range(per.nclust.map((x) => x.rps), 0)}, bare ${range(per.bare.map((x) => x.rps), 0)}`)
  console.log(`server CPU per request: nclust median ${median(per.nclust.map((x) => x.cpuUs)).toFixed(2)} µs, bare ${median(per.bare.map((x) => x.cpuUs)).toFixed(2)} µs; ` +
    `extra µs/req median ${median(extraUs).toFixed(2)} (rounds ${range(extraUs, 2)})`)
  ratio('hello world req/s, nclust defaults / bare node:cluster', median(ratios).toFixed(3), '>= 0.99', range(ratios))
  ratio('hello world server CPU µs/request, nclust - bare', median(extraUs).toFixed(2), '<= +0.3', range(extraUs, 2))

  if (profileDir) { // profiles of the throughput rounds only: no reload (its new workers would add their start-up)
    for (const c of [nclust, bare]) { mkdirSync(`${profileDir}/${c.mode}`, { recursive: true }); writeFileSync(`${profileDir}/${c.mode}/requests.json`, JSON.stringify({ requests: served[c.mode] })) }
  }
  for (const c of profileDir ? [] : [bare, nclust]) {
    c.reset()
    const run = load(c.port, 8)
    setTimeout(() => c.child.kill('SIGHUP'), 2000)
    const r = await run
    await c.waitFor(/RELOADED/, 30000)
    const lost = r.errors + r.timeouts + r.non2xx
    console.log(`reload under ${connections} keep-alive connections, ${c.mode}: ${r.requests.total} requests, lost ${lost} (errors ${r.errors}, timeouts ${r.timeouts}, non-2xx ${r.non2xx})`)
    ratio(`requests lost in a reload, ${c.mode}`, `${lost} of ${r.requests.total}`, c.mode === 'nclust' ? '0' : '')
  }
} finally {
  for (const c of [nclust, bare]) c.child.kill('SIGTERM')
  if (profileDir) await new Promise((resolve) => setTimeout(resolve, 3000)) // the workers write their profiles as they exit
}
