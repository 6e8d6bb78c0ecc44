// Summarize V8 .cpuprofile files (from `node --cpu-prof`): self time by category and the top
// functions, per folder given, so two runs (nclust, bare) can be read side by side.
//   node bench/profile-summary.mjs DIR [DIR ...]     (CLUSTER_BENCH_PROFILE=DIR node bench/cluster.mjs writes DIR/nclust and DIR/bare)
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

function category (node) {
  const { functionName: fn, url } = node.callFrame
  if (fn === '(garbage collector)') return 'GC'
  if (fn === '(idle)') return 'idle'
  if (fn === '(program)') return 'program (native, not JS)'
  if (/fastify-drain/.test(url)) return '@nclust/fastify-drain'
  if (/fastify-cluster/.test(url)) return '@nclust/fastify-cluster'
  if (/fastify-pidmetrics/.test(url)) return '@nclust/fastify-pidmetrics'
  if (/node_modules\/prom-client/.test(url)) return 'prom-client'
  if (/node_modules\/fastify-metrics/.test(url)) return 'fastify-metrics'
  if (/\/pino|sonic-boom|thread-stream/.test(url)) return 'pino'
  if (/node_modules\/(fastify|find-my-way|light-my-request|avvio|@fastify)/.test(url)) return 'fastify'
  if (url.startsWith('node:') || url === '') return 'node core'
  return 'other'
}

for (const dir of process.argv.slice(2)) {
  const cats = new Map()
  const fns = new Map()
  const plugin = new Map() // functions of pidmetrics, prom-client, fastify-metrics: every one, however small
  let total = 0
  let files = 0
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
    const prof = JSON.parse(readFileSync(join(dir, f), 'utf8'))
    const byId = new Map(prof.nodes.map((n) => [n.id, n]))
    const self = new Map()
    for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0))
    files++
    for (const [id, us] of self) {
      const n = byId.get(id)
      const c = category(n)
      cats.set(c, (cats.get(c) ?? 0) + us)
      if (c !== 'idle') total += us
      const key = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/packages\//, '')}:${n.callFrame.lineNumber + 1}`
      fns.set(key, (fns.get(key) ?? 0) + us)
      if (c.startsWith('@nclust/fastify-pidmetrics') || c === 'prom-client' || c === 'fastify-metrics') plugin.set(key, (plugin.get(key) ?? 0) + us)
    }
  }
  // Requests served while profiling (written by cluster.mjs): self time per request.
  const requests = existsSync(join(dir, 'requests.json')) ? JSON.parse(readFileSync(join(dir, 'requests.json'), 'utf8')).requests : undefined
  const perReq = (us) => requests ? (us / requests).toFixed(2) : '–'
  console.log(`\n${dir}: ${files} profiles, busy (non-idle) ${(total / 1e6).toFixed(2)} s${requests ? `, ${requests} requests, ${perReq(total)} µs/request` : ''}`)
  console.log('| category | self ms | share of busy | µs/request |\n|---|---|---|---|')
  for (const [c, us] of [...cats].sort((a, b) => b[1] - a[1])) if (c !== 'idle') console.log(`| ${c} | ${(us / 1000).toFixed(0)} | ${(100 * us / total).toFixed(1)} % | ${perReq(us)} |`)
  console.log('top functions (self ms):')
  for (const [k, us] of [...fns].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${(us / 1000).toFixed(0).padStart(6)}  ${k}`)
  if (plugin.size > 0) {
    console.log('pidmetrics, prom-client, fastify-metrics functions (self ms, µs/request):')
    for (const [k, us] of [...plugin].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${(us / 1000).toFixed(1).padStart(6)}  ${perReq(us).padStart(5)}  ${k}`)
  }
}
