// Reload and recycle under load: nclust against PM2 7, in one run, on this machine.
//
//   node bench/lifecycle.mjs [connections=50] [ms=50]
//
// Both run bench/lifecycle-app.mjs with 2 workers; 50 keep-alive connections (undici) send
// GET /work?ms=50 back to back. For each operation the script records every request: failed ones
// (resets and other socket errors, non-2xx), and p99 latency of the requests started during the
// operation against p99 of the 3 s at rest just before it.
//   reload:  nclust SIGHUP (rolling, surge-first)        PM2 `pm2 reload` (cluster mode, --wait-ready)
//   recycle: nclust maxRss 200 MB (sampled every 1 s)    PM2 --max-memory-restart 200M (PM2_WORKER_INTERVAL=1000)
//            one worker is made to keep 150 MB; the operation lasts until that worker is replaced.
// PM2 runs with a private PM2_HOME under a temp dir; its daemon is killed at the end. Build first (pnpm build).
import { spawn, execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, request } from 'undici'

const here = fileURLToPath(new URL('.', import.meta.url))
const connections = Number(process.argv[2] ?? 50)
const workMs = Number(process.argv[3] ?? 50)
const APP = join(here, 'lifecycle-app.mjs')
const PM2_HOME = mkdtempSync(join(tmpdir(), 'nclust-bench-pm2-'))
const PM2_BIN = join(here, 'node_modules', '.bin', 'pm2')
const pm2Env = { ...process.env, PM2_HOME, PM2_WORKER_INTERVAL: '1000' }
const pm2 = (...args) => execFileSync(PM2_BIN, args, { env: pm2Env, stdio: ['ignore', 'pipe', 'pipe'] }).toString()
// During a measurement the CLI runs asynchronously: a synchronous call would freeze the load loop.
const pm2Async = async (...args) => (await promisify(execFile)(PM2_BIN, args, { env: pm2Env, maxBuffer: 16 * 1024 * 1024 })).stdout

function freePort () {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

async function waitUntil (fn, what, ms = 60000) {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** Closed-loop keep-alive load; every request recorded with its start, end and outcome. */
function load (port) {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections, pipelining: 1, keepAliveTimeout: 60000 })
  const records = []
  const state = { running: true }
  const loops = Array.from({ length: connections }, async () => {
    while (state.running) {
      const start = performance.now()
      let outcome = 'ok'
      let pid
      try {
        const res = await pool.request({ path: `/work?ms=${workMs}`, method: 'GET', headersTimeout: 30000, bodyTimeout: 30000 })
        const body = await res.body.text()
        if (res.statusCode !== 200) outcome = `http ${res.statusCode}`
        else pid = JSON.parse(body).pid
      } catch (err) {
        const code = err.code ?? ''
        outcome = code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' ? 'reset' : (code || err.message)
        if (state.running) await sleep(10) // a refused connect must not spin
      }
      records.push({ start, end: performance.now(), outcome, pid })
    }
  })
  return { records, async stop () { state.running = false; await Promise.all(loops); await pool.close() } }
}

const p99 = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] }

/** Run `op` (resolves when the operation is over) under load; report failures and p99 during vs at rest. */
async function measure (name, port, op) {
  const l = load(port)
  await sleep(4000) // warm-up (1 s) + rest window (3 s)
  const opStart = performance.now()
  await op()
  const opEnd = performance.now()
  await sleep(1000)
  await l.stop()
  const rest = l.records.filter((r) => r.start >= opStart - 3000 && r.start < opStart)
  const during = l.records.filter((r) => r.start >= opStart && r.start <= opEnd)
  const failed = l.records.filter((r) => r.outcome !== 'ok')
  const resets = failed.filter((r) => r.outcome === 'reset').length
  const lat = (rs) => rs.filter((r) => r.outcome === 'ok').map((r) => r.end - r.start)
  const row = {
    name,
    requests: l.records.length,
    failed: failed.length,
    resets,
    other: [...new Set(failed.filter((r) => r.outcome !== 'reset').map((r) => r.outcome))].join(' ') || '-',
    opMs: Math.round(opEnd - opStart),
    p99Rest: p99(lat(rest)),
    p99During: p99(lat(during))
  }
  row.ratio = row.p99During / row.p99Rest
  console.log(`${name.padEnd(16)} ${String(row.requests).padStart(6)} requests, failed ${row.failed} (resets ${row.resets}; other: ${row.other}), ` +
    `operation ${row.opMs} ms, p99 at rest ${row.p99Rest.toFixed(1)} ms, during ${row.p99During.toFixed(1)} ms: ${row.ratio.toFixed(2)}x`)
  return row
}

async function alloc (port) {
  const res = await request(`http://127.0.0.1:${port}/alloc?mb=150`, { reset: true })
  return JSON.parse(await res.body.text()).pid
}

// ── nclust ──────────────────────────────────────────────────────────────────────────────────
async function startNclust (env = {}) {
  const port = await freePort()
  const child = spawn(process.execPath, [APP, 'nclust'], { env: { ...process.env, PORT: String(port), ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = []
  let buf = ''
  child.stdout.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) { try { lines.push(JSON.parse(buf.slice(0, i))) } catch {} buf = buf.slice(i + 1) }
  })
  await waitUntil(() => lines.some((l) => l.msg === 'READY'), 'nclust ready')
  return {
    port,
    lines,
    child,
    async stop () { child.kill('SIGTERM'); await new Promise((resolve) => child.once('exit', resolve)) }
  }
}

// ── PM2 ─────────────────────────────────────────────────────────────────────────────────────
async function startPm2 (extra = []) {
  const port = await freePort()
  execFileSync(PM2_BIN, ['start', APP, '-i', '2', '--name', 'bench', '--wait-ready', '--listen-timeout', '10000', ...extra, '--', 'pm2'],
    { env: { ...pm2Env, PORT: String(port) }, stdio: 'ignore' })
  await waitUntil(async () => {
    try { return (await (await request(`http://127.0.0.1:${port}/work?ms=0`)).body.text()).includes('pid') } catch { return false }
  }, 'pm2 app answering')
  return { port, stop () { pm2('delete', 'bench') } }
}
const pm2Pids = async () => JSON.parse(await pm2Async('jlist')).filter((p) => p.name === 'bench' && p.pm2_env.status === 'online').map((p) => p.pid)

const rows = []
try {
  console.log(`${connections} keep-alive connections, GET /work?ms=${workMs}, 2 workers each; PM2 ${createRequire(import.meta.url)('pm2/package.json').version}, Node ${process.version}`)
  {
    const n = await startNclust()
    rows.push(await measure('reload nclust', n.port, async () => {
      const seen = n.lines.filter((l) => l.msg === 'RELOADED').length
      n.child.kill('SIGHUP')
      await waitUntil(() => n.lines.filter((l) => l.msg === 'RELOADED').length > seen, 'nclust reload')
    }))
    await n.stop()
  }
  {
    const p = await startPm2()
    rows.push(await measure('reload PM2', p.port, async () => { await pm2Async('reload', 'bench') }))
    p.stop()
  }
  {
    const n = await startNclust({ MAX_RSS: '200' })
    rows.push(await measure('recycle nclust', n.port, async () => {
      const pid = await alloc(n.port)
      await waitUntil(() => n.lines.some((l) => l.msg === 'RECYCLED' && l.pid === pid), 'nclust recycle')
    }))
    await n.stop()
  }
  {
    const p = await startPm2(['--max-memory-restart', '200M'])
    rows.push(await measure('recycle PM2', p.port, async () => {
      const pid = await alloc(p.port)
      await waitUntil(async () => { const pids = await pm2Pids(); return !pids.includes(pid) && pids.length === 2 }, 'pm2 memory restart', 90000)
    }))
    p.stop()
  }
} finally {
  try { pm2('kill') } catch {}
  rmSync(PM2_HOME, { recursive: true, force: true })
}
