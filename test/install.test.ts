/**
 * Installed like a user installs it (issue 19): the three packages packed with `pnpm pack`, checked
 * with publint and @arethetypeswrong/cli, installed with npm (no workspace links, no pnpm) into a
 * project outside the repository beside `fastify` from the registry, then:
 * - a CommonJS app that require()s every entry point runs a 2-worker cluster with pidMetrics and the
 *   cluster scrape;
 * - an ESM entry whose app is a CommonJS fastify-cli plugin module (the dual-package case: the
 *   worker runtime is the ESM build, the plugin's require() the CommonJS one);
 * - the installed `nclust` bin on a fastify-cli style CommonJS module;
 * - `tsc` (strict, no skipLibCheck) over .mts and .cts consumers (nodenext) and a bundler consumer.
 * Runs on every Node version CI runs (it is in the Node 20/22 subset too).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePort, get, isAlive, spawnNode, waitFor, type Spawned } from './helpers/index.ts'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const fixtures = fileURLToPath(new URL('./fixtures/install/', import.meta.url))
const packages = ['fastify-cluster', 'fastify-drain', 'fastify-pidmetrics']
const bin = (name: string): string => join(root, 'node_modules', '.bin', name)
let work = ''
let project = ''
let tarballs: string[] = []

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'nclust-install-')) // private (0700), removed after
  const packs = join(work, 'packs')
  for (const name of packages) {
    await run('pnpm', ['pack', '--pack-destination', packs], { cwd: join(root, 'packages', name) })
  }
  tarballs = readdirSync(packs).filter((f) => f.endsWith('.tgz')).map((f) => join(packs, f))
  assert.equal(tarballs.length, 3, `three tarballs: ${tarballs.join(', ')}`)
  project = join(work, 'app')
  cpSync(fixtures, project, { recursive: true })
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'nclust-install-check', version: '1.0.0', private: true }))
  await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs, 'fastify@^5', '@types/node@^20'],
    { cwd: project, timeout: 180_000 })
})

after(() => { if (work !== '') rmSync(work, { recursive: true, force: true }) })

/** Runs a command; resolves with its exit code and output, never rejects. */
async function attempt (file: string, args: string[], cwd: string): Promise<{ code: number, out: string }> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, timeout: 120_000 })
    return { code: 0, out: stdout + stderr }
  } catch (err) {
    const e = err as { code?: number, stdout?: string, stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }
  }
}

test('every tarball passes publint (strict) and @arethetypeswrong/cli', async () => {
  for (const tgz of tarballs) {
    const lint = await attempt(bin('publint'), ['run', tgz, '--strict'], work)
    assert.equal(lint.code, 0, `publint ${tgz}:\n${lint.out}`)
    assert.doesNotMatch(lint.out, /Suggestions?:|Warnings?:|Errors?:/, `publint has something to say about ${tgz}:\n${lint.out}`)
    const types = await attempt(bin('attw'), [tgz, '--no-definitely-typed', '--no-color', '--format', 'ascii'], work)
    assert.equal(types.code, 0, `attw ${tgz}:\n${types.out}`)
    assert.match(types.out, /No problems found/, types.out)
  }
})

test('the tarballs ship no source maps that point at sources they do not ship', () => {
  for (const name of packages) {
    const dist = join(project, 'node_modules', '@nclust', name, 'dist')
    const walk = (dir: string): string[] => readdirSync(dir).flatMap((f) => statSync(join(dir, f)).isDirectory() ? walk(join(dir, f)) : [f])
    const files = walk(dist)
    assert.ok(files.some((f) => f === 'index.js'), `${name}: dist/index.js`)
    assert.equal(files.filter((f) => f.endsWith('.map')).length, 0, `${name} ships .map files whose sources are not in the tarball`)
  }
})

test('TypeScript consumers typecheck, strict and without skipLibCheck: .mts and .cts (nodenext), bundler', async () => {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const config of ['tsconfig.nodenext.json', 'tsconfig.bundler.json']) {
    const r = await attempt(process.execPath, [tsc, '-p', config], project)
    assert.equal(r.code, 0, `tsc -p ${config}:\n${r.out}`)
  }
})

/** Starts an installed app, collects the pids that serve `/`, scrapes the primary, SIGTERMs it. */
async function clusterServes (t: { after: (fn: () => Promise<void>) => void }, start: (port: number, metricsPort: number) => Spawned, metricsPort?: number): Promise<Spawned> {
  const port = await freePort()
  const p = start(port, metricsPort ?? 0)
  t.after(() => p.cleanup())
  const pids = new Set<number>()
  await waitFor(async () => {
    const r = await get(port, '/', { timeout: 2000 }).catch(() => undefined)
    if (r?.status === 200) {
      const pid = r.json().pid as number
      pids.add(pid)
      p.track(pid)
    }
    return pids.size >= 2
  }, `2 worker pids served on ${port}\n${p.output()}`, 60_000, 100)
  if (metricsPort !== undefined) {
    const scrape = await waitFor(async () => {
      const r = await get(metricsPort, '/metrics', { timeout: 5000 }).catch(() => undefined)
      return r?.status === 200 && [...pids].every((pid) => r.body.includes(`pid="${pid}"`)) ? r.body : undefined
    }, `the cluster scrape labelled with both pids ${[...pids].join(', ')}`, 30_000, 200)
    for (const pid of pids) assert.match(scrape, new RegExp(`process_resident_memory_bytes\\{pid="${pid}",worker="[01]"\\}`))
  }
  p.child.kill('SIGTERM')
  const exit = await p.waitForExit(30_000)
  assert.deepEqual(exit, { code: 0, signal: null }, p.output())
  for (const pid of pids) await waitFor(() => !isAlive(pid), `worker ${pid} gone`, 10_000)
  return p
}

test('a CommonJS app require()s every entry point and runs 2 workers with the cluster scrape; SIGTERM exits 0', async (t) => {
  const metricsPort = await freePort()
  const p = await clusterServes(t, (port) => spawnNode(join(project, 'app.cjs'), { cwd: project, env: { PORT: String(port), METRICS_PORT: String(metricsPort) } }), metricsPort)
  const ready = p.lines.find((l) => l.msg === 'install app ready') as { shapes?: Record<string, boolean> } | undefined
  assert.deepEqual(ready?.shapes, { drainIsPlugin: true, pidMetricsIsPlugin: true, drainDefaults: true }, 'require() gives the plugin itself, as @fastify/* plugins do')
})

test('an ESM entry with a CommonJS fastify-cli plugin as the app: both builds share the request channel', async (t) => {
  const metricsPort = await freePort()
  await clusterServes(t, (port) => spawnNode(join(project, 'server.mjs'), { cwd: project, env: { PORT: String(port), METRICS_PORT: String(metricsPort) } }), metricsPort)
})

test('the installed nclust bin runs a fastify-cli style CommonJS module; SIGTERM exits 0', async (t) => {
  await clusterServes(t, (port) => spawnNode(join(project, 'node_modules', '@nclust', 'fastify-cluster', 'bin', 'nclust.js'),
    { cwd: project, args: ['start', 'cli-app.cjs', '--workers', '2', '--port', String(port), '--address', '127.0.0.1'] }))
})
