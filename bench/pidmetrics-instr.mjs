// Instructions per request of each bench/pidmetrics-server.mjs variant, counted by valgrind's
// callgrind: a figure that does not move with the neighbours' load the way CPU time does on this
// shared 2-core machine (perf's hardware counters are not exposed in this VM: `perf stat -e
// instructions` says "not supported").
//
//   node bench/pidmetrics-instr.mjs [requests=4000] [warmup=6000] [repeats=3]
//   VARIANTS=bare,pidmetrics,both node bench/pidmetrics-instr.mjs
//
// Per variant and repeat: the server starts under `valgrind --tool=callgrind --instr-atstart=no`
// (nothing counted during start-up), gets `warmup` requests (the JIT settles), then counting is
// switched on (`callgrind_control -i on`), exactly `requests` requests are sent (autocannon, one
// keep-alive connection by default: CONNECTIONS, this process), counting is switched off and the server exits; the count
// covers every thread of the server (V8's compiler and GC helper threads too). Instructions are not
// time: a cache miss costs one instruction, and valgrind runs the threads one at a time; the figure
// is for "what did this change add to the work per request", the req/s bench for how fast it runs.
// Median of the repeats, with min–max. Build first (pnpm build).
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

const here = fileURLToPath(new URL('.', import.meta.url))
const REQUESTS = Number(process.argv[2] ?? 4000)
const WARMUP = Number(process.argv[3] ?? 6000)
const REPEATS = Number(process.argv[4] ?? 3)
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 1)
const VARIANTS = (process.env.VARIANTS ?? 'bare,bare,pidmetrics,drain,both').split(',')

if (spawnSync('valgrind', ['--version']).status !== 0) {
  console.log('valgrind not found: install it (Debian: apt-get install valgrind) to count instructions')
  process.exit(0)
}
// Not pinned: an instruction count does not depend on which core runs it, and on a shared machine a
// pinned valgrind waits for its one core (valgrind is ~50x slower than node already).

const load = (port, amount) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections: CONNECTIONS, amount, timeout: 60 }, (err, r) => err ? reject(err) : resolve(r))
})

async function count (variant) {
  const dir = mkdtempSync(join(tmpdir(), 'pidmetrics-instr-'))
  // --predictable: V8 on one thread (no concurrent compiler or GC threads), fixed seeds, so when the
  // JIT tiers up and when the GC runs follow the instruction stream instead of the scheduler.
  const [cmd, ...args] = ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${dir}/cg.%p`, process.execPath, '--predictable', `${here}pidmetrics-server.mjs`, variant]
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: here })
  let err = ''
  child.stderr.on('data', (d) => { err += d })
  try {
    const port = await new Promise((resolve, reject) => {
      let buf = ''
      const timer = setTimeout(() => reject(new Error(`${variant}: no READY within 180 s\n${err}`)), 180_000)
      child.stdout.on('data', (d) => {
        buf += d
        const m = /READY (\d+)/.exec(buf)
        if (m) { clearTimeout(timer); resolve(Number(m[1])) }
      })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${variant} exited ${code}\n${err}`)) })
    })
    await load(port, WARMUP)
    if (spawnSync('callgrind_control', ['-i', 'on', String(child.pid)]).status !== 0) throw new Error('callgrind_control -i on failed')
    const r = await load(port, REQUESTS)
    spawnSync('callgrind_control', ['-i', 'off', String(child.pid)])
    const done = r.requests.total
    if (r.non2xx + r.errors > 0 || done !== REQUESTS) throw new Error(`${variant}: ${done} requests, ${r.non2xx} non-2xx, ${r.errors} errors`)
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
    let total = 0
    let jit = 0
    for (const f of readdirSync(dir)) {
      const text = readFileSync(join(dir, f), 'utf8')
      const m = /^totals: (\d+)/m.exec(text) ?? /^summary: (\d+)/m.exec(text)
      if (m) total += Number(m[1])
      // Self cost per function: V8's optimizing compiler (its threads and the main thread's share)
      // is when the JIT happened to tier up, not work per request; counted apart so the totals can
      // be read without it.
      const a = spawnSync('callgrind_annotate', ['--threshold=100', '--inclusive=no', '--auto=no', join(dir, f)], { encoding: 'utf8', maxBuffer: 64 << 20 })
      for (const line of (a.stdout ?? '').split('\n')) {
        const fm = /^\s*([\d,]+) \([\s\d.]+%\)\s+\S*?:(.*)$/.exec(line)
        if (fm && /v8::internal::(compiler|maglev|baseline|Compiler|Zone|Parser|interpreter::Bytecode|OptimizingCompileDispatcher)|v8::internal::wasm/.test(fm[2])) jit += Number(fm[1].replace(/,/g, ''))
      }
    }
    return { total: total / done, jit: jit / done }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    if (process.env.KEEP) console.log(dir); else rmSync(dir, { recursive: true, force: true })
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }
const names = VARIANTS.map((v, i) => VARIANTS.indexOf(v) === i ? v : `${v} (again)`)
const per = Object.fromEntries(names.map((n) => [n, []]))
console.log(`instructions per request: ${REQUESTS} requests after ${WARMUP} warm-up, ${REPEATS} repeats, variants ${names.join(', ')}`)
for (let r = 0; r < REPEATS; r++) {
  const order = r % 2 === 0 ? names : [...names].reverse()
  for (const n of order) {
    const v = n.replace(/ \(again\)$/, '')
    const { total, jit } = await count(v)
    per[n].push({ total, rest: total - jit })
    console.log(`repeat ${r + 1} ${n.padEnd(28)} ${Math.round(total).toLocaleString('en-US').padStart(10)} instructions/request, of which JIT compiler ${Math.round(jit).toLocaleString('en-US')}: ${Math.round(total - jit).toLocaleString('en-US')} without`)
  }
}
const fmt = (x) => Math.round(x).toLocaleString('en-US')
const col = (n, k) => {
  const xs = per[n].map((x) => x[k])
  const m = median(xs)
  const b = median(per[names[0]].map((x) => x[k]))
  return `${fmt(m)}${xs.length > 1 ? ` (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})` : ''} | ${m >= b ? '+' : '−'}${fmt(Math.abs(m - b))} (${(100 * (m - b) / b).toFixed(2)} %)`
}
console.log(`\n| variant | instructions/request | over ${names[0]} | without V8's compiler | over ${names[0]} |\n|---|---|---|---|---|`)
for (const n of names) console.log(`| ${n} | ${col(n, 'total')} | ${col(n, 'rest')} |`)
