// Worker memory: RSS and USS of each worker of a 2-worker hello-world cluster, idle (3 s after both
// serve) and again after a load run, for bare node:cluster and nclust with every default
// (hangProbe 'on-hang': workers forked with --inspect-port=127.0.0.1:0, nothing started until a hang),
// then each other hangProbe mode: 'always' (the probe thread in every worker) and 'off'. Servers
// pinned to core 0, the load generator (this process) to core 1, as compare.mjs row 2. Rounds
// alternate the order; medians. Prints one RATIO line per mode and figure (idle, after load).
// Usage: node bench/worker-rss.mjs [rounds=3] [load seconds=5]
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'

const rounds = Number(process.argv[2] ?? 3)
const seconds = Number(process.argv[3] ?? 5)
const app = fileURLToPath(new URL('cluster-app.mjs', import.meta.url))
const variants = {
  'bare node:cluster': { mode: 'bare' },
  'nclust, every default (hangProbe on-hang)': { mode: 'nclust-defaults' },
  'nclust, hangProbe always': { mode: 'nclust-defaults', env: { NCLUST_HANG_PROBE: 'always' } },
  'nclust, hangProbe off': { mode: 'nclust-defaults', env: { NCLUST_HANG_PROBE: 'off' } }
}

const freePort = () => new Promise((resolve) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) }) })
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
function memory (pid) {
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])
  const smaps = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
  const field = (name) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(smaps)[1])
  return { rss: rss / 1024, uss: (field('Private_Clean') + field('Private_Dirty')) / 1024 }
}
const children = (pid) => readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
const workerMemory = (pid) => children(pid).map(memory)

async function measure (name, v) {
  const port = await freePort()
  const child = spawn('taskset', ['-c', '0', process.execPath, app, v.mode], {
    env: { ...process.env, PORT: String(port), WORKERS: '2', NCLUST_LOG_FORMAT: 'json', ...v.env }, stdio: ['ignore', 'pipe', 'inherit']
  })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  try {
    const t0 = Date.now()
    while (!out.includes('READY')) { if (Date.now() - t0 > 30000) throw new Error(`${name}: not ready`); await sleep(20) }
    await sleep(3000)
    const idle = workerMemory(child.pid)
    await new Promise((resolve, reject) => autocannon({ url: `http://127.0.0.1:${port}/`, connections: 50, duration: seconds }, (e, r) => e ? reject(e) : resolve(r)))
    await sleep(2000)
    const loaded = workerMemory(child.pid)
    return { idle, loaded }
  } finally { child.kill('SIGKILL'); for (const p of (() => { try { return children(child.pid) } catch { return [] } })()) try { process.kill(p, 'SIGKILL') } catch {} }
}

const names = Object.keys(variants)
const results = Object.fromEntries(names.map((n) => [n, { idleRss: [], idleUss: [], loadRss: [], loadUss: [] }]))
for (let r = 0; r < rounds; r++) {
  const order = names.map((_, i) => names[(i + r) % names.length])
  for (const n of r % 2 ? order.reverse() : order) {
    const { idle, loaded } = await measure(n, variants[n])
    for (const m of idle) { results[n].idleRss.push(m.rss); results[n].idleUss.push(m.uss) }
    for (const m of loaded) { results[n].loadRss.push(m.rss); results[n].loadUss.push(m.uss) }
  }
  process.stderr.write(`round ${r + 1}/${rounds} done\n`)
}
const base = results[names[0]]
const cell = (xs, bs) => `${median(xs).toFixed(1)} (×${(median(xs) / median(bs)).toFixed(2)})`
console.log(`\nWorker memory, MB, median of ${rounds} rounds × 2 workers, Node ${process.version}; × = ratio to bare node:cluster (goal for nclust defaults: ≤ 1.05 RSS idle and after load)\n`)
console.log('| variant | idle RSS | idle USS | RSS after load | USS after load |')
console.log('|---|---|---|---|---|')
for (const n of names) {
  const x = results[n]
  if (n !== names[0]) {
    console.log(`RATIO\tworker RSS idle, ${n} / bare\t${(median(x.idleRss) / median(base.idleRss)).toFixed(2)}\t${n === names[1] ? '<= 1.05' : ''}\t`)
    console.log(`RATIO\tworker RSS after load, ${n} / bare\t${(median(x.loadRss) / median(base.loadRss)).toFixed(2)}\t${n === names[1] ? '<= 1.05' : ''}\t`)
  }
  console.log(`| ${n} | ${cell(x.idleRss, base.idleRss)} | ${cell(x.idleUss, base.idleUss)} | ${cell(x.loadRss, base.loadRss)} | ${cell(x.loadUss, base.loadUss)} |`)
}
