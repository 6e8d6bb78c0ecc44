// Throughput cost of @nclust/fastify-drain: hello-world with the plugin over without, one run.
// Both servers run for the whole benchmark, each in its own child process; load comes from this
// process with autocannon, in short slices alternating ABBA within each round, so background load
// (2 shared cores) hits both sides alike. Also reports server CPU time per request, which the
// neighbours disturb much less than req/s. Goal: ratio >= 0.97.
// Run from the repo root after `pnpm --filter @nclust/fastify-drain build`:
//   node bench/drain.mjs [rounds=6] [seconds per side per round=3] [connections=50]
//   DRAIN_BENCH_AA=1 node bench/drain.mjs   (both sides without the plugin: the noise floor)
import { fork } from 'node:child_process'
import { once } from 'node:events'
import autocannon from 'autocannon'

const rounds = Number(process.argv[2] ?? 6)
const seconds = Number(process.argv[3] ?? 3)
const connections = Number(process.argv[4] ?? 50)
const SLICE = 0.5 // seconds per slice
const server = new URL('./drain-server.mjs', import.meta.url)
// DRAIN_BENCH_AA=1 runs "without" on both sides: the ratio it prints is this machine's noise floor.
const aa = process.env.DRAIN_BENCH_AA === '1'

async function start (mode) {
  const child = fork(server, [aa ? 'plain' : mode, '{}'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const [{ port }] = await once(child, 'message')
  const cpu = async () => { child.send('cpu'); return (await once(child, 'message'))[0].cpu }
  return { mode, child, cpu, url: `http://127.0.0.1:${port}/` }
}

async function slice (side, duration) {
  const before = await side.cpu()
  const r = await autocannon({ url: side.url, connections, duration })
  const cpu = (await side.cpu()) - before
  if (r.errors > 0 || r.non2xx > 0) throw new Error(`${side.mode}: ${r.errors} errors, ${r.non2xx} non-2xx`)
  return { requests: r.requests.total, seconds: duration, cpu }
}

const plain = await start('plain')
const drain = await start('drain')
try {
  await slice(plain, 1) // warm-up, not counted
  await slice(drain, 1)
  const sum = { plain: { requests: 0, seconds: 0, cpu: 0 }, drain: { requests: 0, seconds: 0, cpu: 0 } }
  const pairs = [] // with/without of two back-to-back slices: background load hits both alike
  const slicesPerSide = Math.max(1, Math.round(seconds / SLICE))
  for (let i = 0; i < rounds; i++) {
    const round = { plain: 0, drain: 0 }
    for (let j = 0; j < slicesPerSide; j++) {
      const order = (i + j) % 2 === 0 ? [plain, drain] : [drain, plain]
      const got = {}
      for (const side of order) {
        const s = await slice(side, SLICE)
        got[side.mode] = s.requests
        round[side.mode] += s.requests
        sum[side.mode].requests += s.requests
        sum[side.mode].seconds += s.seconds
        sum[side.mode].cpu += s.cpu
      }
      pairs.push(got.drain / got.plain)
    }
    const secs = slicesPerSide * SLICE
    console.log(`round ${i + 1}: without ${Math.round(round.plain / secs)} req/s, with ${Math.round(round.drain / secs)} req/s, ratio ${(round.drain / round.plain).toFixed(3)}`)
  }
  const sorted = [...pairs].sort((a, b) => a - b)
  const median = (sorted[Math.floor((sorted.length - 1) / 2)] + sorted[Math.ceil((sorted.length - 1) / 2)]) / 2
  const overall = (sum.drain.requests / sum.drain.seconds) / (sum.plain.requests / sum.plain.seconds)
  const usPerReq = (x) => x.cpu / x.requests
  const cpuRatio = usPerReq(sum.plain) / usPerReq(sum.drain)
  console.log(`RATIO\tdrain plugin req/s, with / without\t${median.toFixed(3)}\t>= 0.97\t`)
  console.log(`fastify-drain: with/without throughput ratio ${median.toFixed(3)} (median of ${pairs.length} back-to-back pairs; overall ${overall.toFixed(3)}; ` +
    `server CPU/request ${usPerReq(sum.plain).toFixed(1)} vs ${usPerReq(sum.drain).toFixed(1)} µs = ${cpuRatio.toFixed(3)}; ${rounds} rounds x ${seconds} s/side, ${connections} connections) ` +
    (median >= 0.97 ? 'OK (goal >= 0.97)' : 'BELOW the 0.97 goal'))
} finally {
  for (const side of [plain, drain]) side.child.kill()
}
