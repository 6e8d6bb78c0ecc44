// nclust side by side with what users would pick instead, in ONE run on this machine (loopback only):
// a single Fastify process, nclust's startClustered (2 workers), bare node:cluster, PM2 7 cluster
// mode and Platformatic Watt (workers: 2), all serving bench/peers/app.mjs.
//
//   node bench/compare.mjs            (pnpm bench runs it; build first: pnpm build)
//   BENCH_ROUNDS=3 BENCH_SECONDS=3 BENCH_ONLY=1,2,3,4,5 BENCH_SKIP_WATT=1 node bench/compare.mjs
//
// Rows: (1) hello world and a ~1 ms CPU route: req/s and server CPU per request (every process of
// the variant, a daemon included, from /proc); (2) plugin cost, server pinned to one core;
// (3) an I/O-bound route (50 ms) at 500 connections against the Little's-law bound; (4) recovery:
// kill -9 of a worker, SIGTERM with ten 1 s requests in flight, a rolling reload; (5) memory.
// Rounds alternate the variants' order so drift hits all alike; each ratio is the median of the
// per-round ratios, with the min-max over rounds as its spread. The load generator (autocannon, in
// this process) shares the 2 cores with the servers: read ratios and CPU/request, not req/s.
// Writes bench/results/latest.json and prints the markdown tables bench/README.md carries.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import { alive, tree, treeCpuUs, treeRss } from './peers/procs.mjs'
import { ensureWatt, freePort, fresh, start, versions, waitServing } from './peers/variants.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const ONLY = new Set((process.env.BENCH_ONLY ?? '1,2,3,4,5').split(',').map(Number))
const SKIP_WATT = process.env.BENCH_SKIP_WATT === '1'
const started = Date.now()
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${msg}`)

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
const spread = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length })
const fmt = (s, d = 2) => s === null || s === undefined ? 'n/a' : `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`
const int = (x) => Math.round(x).toLocaleString('en-US')

function load (port, path, seconds, connections = CONNECTIONS) {
  return new Promise((resolve, reject) => {
    autocannon({ url: `http://127.0.0.1:${port}${path}`, connections, duration: seconds, timeout: 10 }, (err, r) => err ? reject(err) : resolve(r))
  })
}

/** One measured slice: req/s and the variant's CPU µs per request (whole process tree). */
async function slice (v, path, seconds, connections) {
  const cpu0 = treeCpuUs(v.root)
  const r = await load(v.port, path, seconds, connections)
  const cpu = treeCpuUs(v.root) - cpu0
  const ok = r.requests.total - r.non2xx
  return { rps: ok / seconds, cpuUs: ok > 0 ? cpu / ok : NaN, errors: r.errors + r.timeouts + r.non2xx }
}

if (process.argv.includes('--table')) {
  // Print the tables of the last run again (bench/results/latest.json), without measuring.
  const { readFileSync } = await import('node:fs')
  console.log(tables(JSON.parse(readFileSync(join(here, 'results', 'latest.json'), 'utf8'))))
  process.exit(0)
}

const kinds = ['single', 'nclust', 'bare', 'pm2', ...(SKIP_WATT ? [] : ['watt'])]
const results = {
  date: new Date().toISOString(),
  machine: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', loadavgAtStart: loadavg() },
  versions: { ...versions(), watt: null },
  config: { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS },
  note: 'one run, loopback; the load generator (autocannon) shares the cores with the servers',
  rows: {}
}

const running = new Map()
async function cleanup () {
  for (const v of running.values()) { try { await v.stop() } catch {} }
  running.clear()
}
process.on('SIGINT', () => { cleanup().finally(() => process.exit(130)) })

try {
  if (!SKIP_WATT && (ONLY.has(1) || ONLY.has(3) || ONLY.has(4) || ONLY.has(5))) results.versions.watt = ensureWatt(log).versions

  if (ONLY.has(1) || ONLY.has(3) || ONLY.has(4) || ONLY.has(5)) {
    for (const k of kinds) {
      const t0 = Date.now()
      running.set(k, await start(k, await freePort()))
      log(`${k} serving (${running.get(k).workers} worker(s)) in ${Date.now() - t0} ms`)
    }
    for (const v of running.values()) { await load(v.port, '/', 1); await load(v.port, '/cpu', 1) } // warm-up (JIT)
  }

  // ── (1) hello world and a ~1 ms CPU route ────────────────────────────────────────────────
  if (ONLY.has(1)) {
    const row = {}
    for (const [name, path] of [['hello', '/'], ['cpu1ms', '/cpu']]) {
      const per = Object.fromEntries(kinds.map((k) => [k, []]))
      for (let r = 0; r < ROUNDS; r++) {
        const order = r % 2 === 0 ? kinds : [...kinds].reverse()
        const rot = order.slice(r % order.length).concat(order.slice(0, r % order.length))
        for (const k of rot) per[k].push(await slice(running.get(k), path, SECONDS))
        log(`(1) ${name} round ${r + 1}: ${kinds.map((k) => `${k} ${int(per[k][r].rps)}/s ${per[k][r].cpuUs.toFixed(0)}µs`).join(', ')}`)
      }
      row[name] = Object.fromEntries(kinds.map((k) => [k, {
        rps: spread(per[k].map((s) => s.rps)),
        cpuUsPerReq: spread(per[k].map((s) => s.cpuUs)),
        rpsVsNclust: spread(per[k].map((s, i) => s.rps / per.nclust[i].rps)),
        cpuVsNclust: spread(per[k].map((s, i) => s.cpuUs / per.nclust[i].cpuUs)),
        errors: per[k].reduce((a, s) => a + s.errors, 0)
      }]))
    }
    results.rows.throughput = row
  }

  // ── (5) memory, after the load ───────────────────────────────────────────────────────────
  if (ONLY.has(5)) {
    results.rows.memory = Object.fromEntries(kinds.map((k) => {
      const procs = treeRss(running.get(k).root)
      return [k, { processes: procs, totalMB: Math.round(procs.reduce((a, p) => a + p.rssMB, 0)) }]
    }))
    log(`(5) memory: ${kinds.map((k) => `${k} ${results.rows.memory[k].totalMB} MB`).join(', ')}`)
  }

  // ── (3) I/O-bound route at 500 connections ───────────────────────────────────────────────
  if (ONLY.has(3)) {
    const conns = 500
    const bound = conns / 0.05
    const per = Object.fromEntries(kinds.map((k) => [k, []]))
    const rounds = Math.max(2, ROUNDS - 2)
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? kinds : [...kinds].reverse()
      for (const k of order) per[k].push(await slice(running.get(k), '/io', SECONDS + 1, conns))
      log(`(3) io round ${r + 1}: ${kinds.map((k) => `${k} ${int(per[k][r].rps)}/s`).join(', ')}`)
    }
    results.rows.io = {
      rounds,
      connections: conns,
      littlesLawBound: bound,
      variants: Object.fromEntries(kinds.map((k) => [k, {
        rps: spread(per[k].map((s) => s.rps)),
        ofBound: spread(per[k].map((s) => s.rps / bound)),
        cpuUsPerReq: spread(per[k].map((s) => s.cpuUs)),
        errors: per[k].reduce((a, s) => a + s.errors, 0)
      }]))
    }
  }

  // ── (4) recovery ─────────────────────────────────────────────────────────────────────────
  if (ONLY.has(4)) {
    const rec = { reload: {}, kill9: {}, sigterm: {} }
    // a. rolling reload of 2 workers under 20 keep-alive connections: time and requests lost.
    for (const k of ['nclust', 'pm2']) {
      const v = running.get(k)
      const t0 = Date.now()
      const during = load(v.port, '/', 8, 20)
      await sleep(1000)
      const r0 = Date.now()
      if (k === 'nclust') {
        v.child.kill('SIGHUP')
        while (!/RELOADED/.test(v.output()) && Date.now() - r0 < 60000) await sleep(20)
      } else {
        v.cli('reload', 'bench')
      }
      const ms = Date.now() - r0
      const r = await during
      rec.reload[k] = { ms, requests: r.requests.total, lost: r.errors + r.timeouts + r.non2xx }
      log(`(4) reload ${k}: ${ms} ms, lost ${rec.reload[k].lost} of ${r.requests.total} (${Date.now() - t0} ms)`)
      await waitServing(v.port, 2)
    }
    // b. kill -9 of one worker: time until a new worker process answers on a fresh connection.
    for (const k of ['nclust', 'bare', 'pm2']) {
      const v = running.get(k)
      const before = tree(v.root).filter((p) => p.pid !== v.root).map((p) => p.pid)
      const victim = before[0]
      const t0 = performance.now()
      process.kill(victim, 'SIGKILL')
      let ms = null
      const deadline = Date.now() + 15000
      while (Date.now() < deadline) {
        const now = tree(v.root).filter((p) => p.pid !== v.root).map((p) => p.pid)
        const added = now.filter((p) => !before.includes(p))
        if (added.length > 0) {
          try {
            const ids = new Set()
            for (let i = 0; i < 6; i++) ids.add(JSON.parse((await fresh(v.port, '/__id', 2000)).body).id.split('/')[0])
            if (added.some((p) => ids.has(String(p)))) { ms = performance.now() - t0; break }
          } catch {}
        }
        await sleep(10)
      }
      rec.kill9[k] = { ms: ms === null ? null : Math.round(ms), replaced: ms !== null }
      log(`(4) kill -9 ${k}: ${ms === null ? 'no replacement within 15 s' : `replacement serving in ${Math.round(ms)} ms`}`)
    }
    // c. SIGTERM to the root with ten 1 s requests in flight: completed requests and time to exit.
    for (const k of kinds) {
      const v = running.get(k)
      const pids = tree(v.root).map((p) => p.pid)
      const reqs = Array.from({ length: 10 }, () => fresh(v.port, '/slow', 20000).then((r) => r.status, () => 0))
      await sleep(200)
      const t0 = performance.now()
      process.kill(v.root, 'SIGTERM')
      const statuses = await Promise.all(reqs)
      let exitMs = null
      while (performance.now() - t0 < 30000) {
        if (pids.every((p) => !alive(p))) { exitMs = performance.now() - t0; break }
        await sleep(10)
      }
      rec.sigterm[k] = { completed: statuses.filter((s) => s === 200).length, of: 10, exitMs: exitMs === null ? null : Math.round(exitMs) }
      log(`(4) SIGTERM ${k}: ${rec.sigterm[k].completed}/10 completed, every process gone in ${rec.sigterm[k].exitMs ?? '>30000'} ms`)
      await v.stop()
      running.delete(k)
    }
    results.rows.recovery = rec
  }
  await cleanup()

  // ── (2) plugin cost, server pinned to core 0, load on core 1 ─────────────────────────────
  if (ONLY.has(2)) {
    const pin = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && availableParallelism() >= 2
    if (pin) spawnSync('taskset', ['-p', '-c', '1', String(process.pid)])
    // bare-aa: a second bare server (peers/plugins.mjs registers nothing for it), the A/A row: how far
    // two identical servers land apart in this run, printed beside the plugins' rows.
    const variants = ['bare', 'bare-aa', 'drain', 'pidmetrics', 'both', ...(process.env.BENCH_PLUGIN_VARIANTS ?? '').split(',').filter(Boolean)]
    const servers = {}
    for (const variant of variants) {
      const port = await freePort()
      const cmd = pin ? 'taskset' : process.execPath
      const args = [...(pin ? ['-c', '0', process.execPath] : []), join(here, 'peers', 'plugins.mjs'), variant]
      const child = spawn(cmd, args, { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] })
      await new Promise((resolve, reject) => {
        let out = ''
        child.stdout.on('data', (d) => { out += d; if (/READY/.test(out)) resolve() })
        child.once('exit', (c) => reject(new Error(`plugins ${variant} exited ${c}`)))
      })
      servers[variant] = { port, root: child.pid, stop: async () => child.kill('SIGKILL') }
      running.set(`plugins-${variant}`, servers[variant])
    }
    for (const v of variants) await load(servers[v].port, '/', 1)
    const per = Object.fromEntries(variants.map((v) => [v, []]))
    // Short slices, many rounds: the server is pinned but its core is shared with other tenants.
    const rounds = 2 * ROUNDS + 2
    const secs = Math.max(1, Math.round(SECONDS / 2))
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse()
      for (const v of order) per[v].push(await slice(servers[v], '/', secs))
      log(`(2) round ${r + 1}: ${variants.map((v) => `${v} ${int(per[v][r].rps)}/s ${per[v][r].cpuUs.toFixed(1)}µs`).join(', ')}`)
    }
    results.rows.plugins = {
      pinned: pin,
      goal: 'pidmetrics and both >= 0.95 of bare, pidmetrics <= +1 µs/request (issue 31)',
      variants: Object.fromEntries(variants.map((v) => [v, {
        rps: spread(per[v].map((s) => s.rps)),
        vsBare: spread(per[v].map((s, i) => s.rps / per.bare[i].rps)),
        cpuUsPerReq: spread(per[v].map((s) => s.cpuUs)),
        extraUs: spread(per[v].map((s, i) => s.cpuUs - per.bare[i].cpuUs)),
        // What a saturated server would do: bare's CPU per request over this variant's, per round.
        // The load generator (one core, JavaScript) cannot saturate a hello-world server on the
        // other core, so req/s measures it more than the server; CPU per request does not.
        capacityVsBare: spread(per[v].map((s, i) => per.bare[i].cpuUs / s.cpuUs)),
        bestCpuUs: Math.min(...per[v].map((s) => s.cpuUs))
      }]))
    }
    await cleanup()
    if (pin) spawnSync('taskset', ['-p', '-c', `0-${availableParallelism() - 1}`, String(process.pid)])
  }
} finally {
  await cleanup()
}

results.machine.loadavgAtEnd = loadavg()
results.seconds = Math.round((Date.now() - started) / 1000)
mkdirSync(join(here, 'results'), { recursive: true })
writeFileSync(join(here, 'results', 'latest.json'), JSON.stringify(results, null, 2) + '\n')

console.log(`\n${tables(results)}\n\nbench/results/latest.json written (${results.seconds} s).`)

// ── the markdown bench/README.md carries ──────────────────────────────────────────────────────────
function tables (results) {
  const kinds = Object.keys(results.rows.memory ?? results.rows.throughput?.hello ?? {})
  const { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS } = results.config
  const V = results.versions
  const label = { single: 'single Fastify process', nclust: 'nclust `startClustered`, 2 workers', bare: 'bare `node:cluster`, 2 workers', pm2: `PM2 ${V.pm2} cluster, 2 instances`, watt: `Watt ${V.watt?.wattpm ?? ''} (Node ${V.watt?.node ?? ''}), workers: 2` }
  const md = []
  md.push(`Measured ${results.date.slice(0, 16).replace('T', ' ')} UTC, ${results.machine.cores} cores (${results.machine.cpu}), Node ${V.node}, Fastify ${V.fastify}; ` +
  `load average ${results.machine.loadavgAtStart[0].toFixed(1)} at start (shared machine). One run, ${ROUNDS} alternating rounds of ${SECONDS} s, ` +
  `${CONNECTIONS} connections; the load generator shares the cores. Ratios: median of per-round ratios (min–max). CPU: server-side µs per request, every process of the variant.`)
  const T = results.rows.throughput
  if (T !== undefined) {
    md.push('', '| variant | hello: req/s × nclust | hello: CPU/req, × nclust | 1 ms-CPU route: req/s × nclust | 1 ms route: CPU/req, × nclust |', '|---|---|---|---|---|')
    for (const k of kinds) {
      const h = T.hello[k]
      const c = T.cpu1ms[k]
      md.push(`| ${label[k]} | ${fmt(h.rpsVsNclust)} | ${h.cpuUsPerReq.median.toFixed(0)} µs, ×${fmt(h.cpuVsNclust)} | ${fmt(c.rpsVsNclust)} | ${c.cpuUsPerReq.median.toFixed(0)} µs, ×${fmt(c.cpuVsNclust)} |`)
    }
    md.push('', `req/s of nclust (median): hello ${int(T.hello.nclust.rps.median)}, 1 ms route ${int(T.cpu1ms.nclust.rps.median)}.`)
  }
  const P = results.rows.plugins
  if (P !== undefined) {
    md.push('', `Plugin cost, hello world, server ${P.pinned ? 'pinned to core 0, load on core 1' : 'NOT pinned (no taskset)'} (goal, issue 31: pidmetrics and both ≥ 0.95 of bare, pidmetrics ≤ +1 µs/request; bare-aa is a second bare server, the A/A noise floor). ` +
    'Capacity = bare CPU/request ÷ this CPU/request (what a saturated server would do); req/s is bound by the load generator:', '',
    '| plugins | req/s | req/s × bare | CPU µs/req (best) | extra µs/req | capacity × bare |', '|---|---|---|---|---|---|')
    for (const [v, s] of Object.entries(P.variants)) md.push(`| ${v} | ${int(s.rps.median)} | ${fmt(s.vsBare)} | ${s.cpuUsPerReq.median.toFixed(1)} (${s.bestCpuUs.toFixed(1)}) | ${fmt(s.extraUs, 1)} | ${fmt(s.capacityVsBare)} |`)
  }
  const IO = results.rows.io
  if (IO !== undefined) {
    md.push('', `I/O-bound route (awaits 50 ms), ${IO.connections} connections, Little's-law bound ${int(IO.littlesLawBound)} req/s:`, '', '| variant | req/s | of the bound | CPU µs/req |', '|---|---|---|---|')
    for (const k of kinds) { const s = IO.variants[k]; md.push(`| ${label[k]} | ${int(s.rps.median)} | ${fmt(s.ofBound)} | ${s.cpuUsPerReq.median.toFixed(0)} |`) }
  }
  const R = results.rows.recovery
  if (R !== undefined) {
    md.push('', '| recovery | ' + kinds.map((k) => k).join(' | ') + ' |', '|---|' + kinds.map(() => '---').join('|') + '|')
    md.push('| kill -9 of a worker → a new worker serving | ' + kinds.map((k) => R.kill9[k] ? (R.kill9[k].replaced ? `${R.kill9[k].ms} ms` : 'never (not replaced)') : '–').join(' | ') + ' |')
    md.push('| SIGTERM, ten 1 s requests in flight: completed | ' + kinds.map((k) => R.sigterm[k] ? `${R.sigterm[k].completed}/10` : '–').join(' | ') + ' |')
    md.push('| … every process gone after | ' + kinds.map((k) => R.sigterm[k]?.exitMs != null ? `${R.sigterm[k].exitMs} ms` : '–').join(' | ') + ' |')
    md.push('| rolling reload of 2 workers under 20 connections: time, requests lost | ' + kinds.map((k) => R.reload[k] ? `${R.reload[k].ms} ms, ${R.reload[k].lost} of ${int(R.reload[k].requests)}` : '–').join(' | ') + ' |')
  }
  const M = results.rows.memory
  if (M !== undefined) {
    md.push('', '| memory (RSS after the load) | processes, MB | total MB |', '|---|---|---|')
    for (const k of kinds) md.push(`| ${label[k]} | ${M[k].processes.map((p) => p.rssMB.toFixed(0)).join(' + ')} | ${M[k].totalMB} |`)
  }
  return md.join('\n')
}
