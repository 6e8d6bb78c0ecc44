// Cost of @nclust/fastify-pidmetrics per request (issue 31): hello-world throughput and server CPU
// per request of each variant against bare Fastify, all in one run, with an A/A row (a second bare
// server measured exactly like the others) so the noise floor is printed beside the figures.
//
//   node bench/pidmetrics.mjs [rounds=9] [seconds=3] [connections=50]
//   VARIANTS=bare,bare,pidmetrics,drain,both node bench/pidmetrics.mjs        (the default set)
//   VARIANTS=bare,bare,pidmetrics,pidmetrics-no-default,empty-hook,url-hook,prom-histogram,fastify-metrics node bench/pidmetrics.mjs
//   PIDMETRICS_BENCH_PROFILE=dir node bench/pidmetrics.mjs 5    (every server with --cpu-prof into dir/<variant>;
//                                                                 then node bench/profile-summary.mjs dir/*)
//
// Every server (bench/pidmetrics-server.mjs, one process each) is up for the whole run, pinned to
// core 0 with taskset; this process (autocannon, the load) moves itself to core 1. Each round loads
// every server once for `seconds`, in an order that rotates and reverses round by round, so a
// neighbour's burst lands on different variants. Per round, each variant is paired with the first
// bare server of the same round: req/s ratio and extra CPU µs per request (server CPU from
// /proc/<pid>/task/*/schedstat, ns: every thread of the server process, divided by the requests it
// answered). Printed: median over rounds with the min–max. The first variant must be `bare`; a second
// `bare` is the A/A row. Build first (pnpm build): the servers import the built packages.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const here = fileURLToPath(new URL('.', import.meta.url))
const ROUNDS = Number(process.argv[2] ?? process.env.ROUNDS ?? 9)
const SECONDS = Number(process.argv[3] ?? process.env.DURATION ?? 3)
const CONNECTIONS = Number(process.argv[4] ?? process.env.CONNECTIONS ?? 50)
const VARIANTS = (process.env.VARIANTS ?? 'bare,bare,pidmetrics,drain,both').split(',').filter(Boolean)
const profileDir = process.env.PIDMETRICS_BENCH_PROFILE
if (VARIANTS[0] !== 'bare') throw new Error('VARIANTS must start with bare (the baseline)')
// A repeated variant gets a label of its own: "bare (A/A)" is the noise floor row.
const labels = VARIANTS.map((v, i) => VARIANTS.indexOf(v) === i ? v : `${v} (A/A)`)

const CORES = availableParallelism() // before pinning this process to one core
const pin = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && CORES >= 2
if (pin) spawnSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' })
else console.warn('taskset not found or one core: servers and load are NOT pinned; numbers are noisier')

/** CPU time of every thread of `pid` so far, in µs (schedstat: ns, unlike utime's 10 ms ticks). */
function cpuUs (pid) {
  let ns = 0
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try { ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]) } catch { /* thread gone */ }
  }
  return ns / 1000
}

async function startServer (variant, label) {
  const dir = profileDir ? `${profileDir}/${label.replace(/\W+/g, '-').replace(/-$/, '')}` : undefined
  const node = [process.execPath, ...(dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []), `${here}pidmetrics-server.mjs`, variant]
  const [cmd, ...args] = pin ? ['taskset', '-c', '0', ...node] : node
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: here })
  const port = await new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`${variant}: no READY within 30 s`)), 30_000)
    child.stdout.on('data', (d) => {
      buf += d
      const m = /READY (\d+)/.exec(buf)
      if (m) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${variant} exited ${code}`)) })
  })
  return { label, variant, child, port, dir, served: 0 }
}

const load = (port, seconds) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections: CONNECTIONS, duration: seconds }, (err, r) => err ? reject(err) : resolve(r))
})
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
const range = (xs, d) => `${Math.min(...xs).toFixed(d)} to ${Math.max(...xs).toFixed(d)}`
const sign = (x, d) => (x >= 0 ? '+' : '') + x.toFixed(d)
const ratioLine = (name, value, goal, spread = '') => console.log(`RATIO\t${name}\t${value}\t${goal}\t${spread}`)

const servers = []
try {
  for (let i = 0; i < VARIANTS.length; i++) servers.push(await startServer(VARIANTS[i], labels[i]))
  for (const s of servers) s.served += (await load(s.port, 2)).requests.total // warm-up: JIT, connections (in a profile too)
  const per = Object.fromEntries(labels.map((l) => [l, []]))
  const avg0 = loadavg()[0]
  console.log(`pidmetrics bench: ${ROUNDS} rounds × ${SECONDS} s per variant, ${CONNECTIONS} connections, ${pin ? 'servers pinned to core 0, load on core 1' : 'NOT pinned'}, load average ${avg0.toFixed(1)} at start`)
  for (let r = 0; r < ROUNDS; r++) {
    const k = r % servers.length
    const rotated = [...servers.slice(k), ...servers.slice(0, k)]
    const order = r % 2 === 0 ? rotated : rotated.reverse()
    for (const s of order) {
      const c0 = cpuUs(s.child.pid)
      const res = await load(s.port, SECONDS)
      const cpu = cpuUs(s.child.pid) - c0
      const n = res.requests.total
      s.served += n
      per[s.label][r] = { rps: n / SECONDS, cpuUs: cpu / n, errors: res.errors + res.non2xx }
    }
    console.log(`round ${String(r + 1).padStart(2)}: ` + labels.map((l) => `${l} ${Math.round(per[l][r].rps)}/s ${per[l][r].cpuUs.toFixed(1)}µs${per[l][r].errors ? ` ERRORS ${per[l][r].errors}` : ''}`).join(', '))
  }

  const base = per[labels[0]]
  const rows = labels.map((l) => {
    const xs = per[l]
    const ratios = xs.map((x, i) => x.rps / base[i].rps)
    const extra = xs.map((x, i) => x.cpuUs - base[i].cpuUs)
    const capacity = xs.map((x, i) => base[i].cpuUs / x.cpuUs)
    return { l, rps: median(xs.map((x) => x.rps)), us: median(xs.map((x) => x.cpuUs)), ratios, extra, capacity }
  })
  console.log(`\nMedian of ${ROUNDS} rounds (min to max over rounds); each round pairs a variant with bare of the same round.` +
    ' Capacity = bare CPU/request ÷ this CPU/request.\n')
  console.log('| variant | req/s | req/s × bare | CPU µs/request | extra CPU µs/request | capacity × bare |\n|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(`| ${r.l} | ${Math.round(r.rps).toLocaleString('en-US')} | ${median(r.ratios).toFixed(3)} (${range(r.ratios, 2)}) | ${r.us.toFixed(2)} | ${sign(median(r.extra), 2)} (${sign(Math.min(...r.extra), 2)} to ${sign(Math.max(...r.extra), 2)}) | ${median(r.capacity).toFixed(3)} (${range(r.capacity, 2)}) |`)
  }
  const avg = loadavg()
  console.log(`\nload average at the end: ${avg.map((x) => x.toFixed(2)).join(' ')} on ${CORES} cores${avg[0] > 2.5 ? ' (other tenants: compare each row with the A/A row)' : ''}`)
  for (const r of rows.slice(1)) {
    const goal = r.l.endsWith('(A/A)') ? '1.00 (noise floor)' : r.l === 'pidmetrics' || r.l === 'both' ? '>= 0.95 and <= +1 µs' : ''
    ratioLine(`hello world req/s ${r.l} / bare (extra CPU µs/request)`, `${median(r.ratios).toFixed(3)} (${sign(median(r.extra), 2)} µs)`, goal, range(r.ratios, 2))
  }
  if (profileDir) {
    for (const s of servers) { mkdirSync(s.dir, { recursive: true }); writeFileSync(`${s.dir}/requests.json`, JSON.stringify({ requests: s.served })) }
  }
} finally {
  await Promise.all(servers.map((s) => new Promise((resolve) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve()
    s.child.once('exit', resolve)
    s.child.kill('SIGTERM') // the server closes and exits; --cpu-prof writes its profile then
  })))
}
