// nclust's supervisor against plain node:cluster, in one run, on this machine:
// 1. hello-world throughput, 2 workers each, rounds alternating (what nclust costs per request);
// 2. a rolling reload under keep-alive load: how many requests each loses.
//
//   node bench/cluster.mjs [rounds=6] [seconds=3] [connections=50]
//
// Build first (pnpm build). Both clusters stay up for the whole run; only one is loaded at a time.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const here = fileURLToPath(new URL('.', import.meta.url))
const rounds = Number(process.argv[2] ?? 6)
const seconds = Number(process.argv[3] ?? 3)
const connections = Number(process.argv[4] ?? 50)

function freePort () {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

async function start (mode) {
  const port = await freePort()
  const child = spawn(process.execPath, [`${here}cluster-app.mjs`, mode], { env: { ...process.env, PORT: String(port), WORKERS: '2' }, stdio: ['ignore', 'pipe', 'inherit'] })
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
  return { mode, port, child, waitFor, reset: () => { out = '' } }
}

const load = (port, duration) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections, duration }, (err, r) => err ? reject(err) : resolve(r))
})
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

const nclust = await start('nclust')
const bare = await start('bare')
try {
  await load(nclust.port, 1); await load(bare.port, 1) // warm up
  const ratios = []
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? [nclust, bare] : [bare, nclust]
    const rps = {}
    for (const c of order) rps[c.mode] = (await load(c.port, seconds)).requests.average
    ratios.push(rps.nclust / rps.bare)
    console.log(`round ${i + 1}: nclust ${rps.nclust.toFixed(0)} req/s, bare node:cluster ${rps.bare.toFixed(0)} req/s, ratio ${(rps.nclust / rps.bare).toFixed(3)}`)
  }
  console.log(`throughput nclust / bare node:cluster: median ${median(ratios).toFixed(3)} over ${rounds} rounds`)

  for (const c of [bare, nclust]) {
    c.reset()
    const run = load(c.port, 8)
    setTimeout(() => c.child.kill('SIGHUP'), 2000)
    const r = await run
    await c.waitFor(/RELOADED/, 30000)
    const lost = r.errors + r.timeouts + r.non2xx
    console.log(`reload under ${connections} keep-alive connections, ${c.mode}: ${r.requests.total} requests, lost ${lost} (errors ${r.errors}, timeouts ${r.timeouts}, non-2xx ${r.non2xx})`)
  }
} finally {
  for (const c of [nclust, bare]) c.child.kill('SIGTERM')
}
