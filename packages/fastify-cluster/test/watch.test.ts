// `nclust start --watch`: a good edit reloads, a broken one keeps the old workers and is reported
// once, a fix reloads again; 50 keep-alive clients lose nothing throughout.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { freePort, get, isAlive, spawnNode, waitFor, type LogLine } from '../../../test/helpers/index.ts'
import type { WorkerExitEvent } from '../src/types.ts'
import { load } from './load.ts'

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const fastify = pathToFileURL(createRequire(import.meta.url).resolve('fastify')).href

function appSource (version: number, broken = false): string {
  return `import Fastify from ${JSON.stringify(fastify)}
import { setTimeout as sleep } from 'node:timers/promises'
${broken ? `throw new Error('edit ${version} is broken (fixture)')\n` : ''}export async function buildApp () {
  const app = Fastify()
  app.get('/slow', async (req) => { await sleep(Number(req.query.ms ?? 1)); return { pid: process.pid, version: ${version} } })
  return app
}
`
}

test('--watch: a good edit reloads with 0 failed requests, a broken one keeps the old workers and prints its error once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-watch-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'app.mjs')
  writeFileSync(file, appSource(1))
  const port = await freePort()
  const p = spawnNode(bin, { args: ['start', '--watch', '-w', '2', '-p', String(port), '-a', '127.0.0.1', file], env: { NCLUST_CONTROL: 'false' } })
  t.after(() => p.cleanup())
  const ready = (l: LogLine): boolean => l.role === 'primary' && l.msg === 'worker ready'
  await waitFor(() => p.lines.filter(ready).length >= 2, '2 workers ready', 30000)
  await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: reloading on changes under'), 10000, 'the watcher')
  const version = async (): Promise<number> => (await get(port, '/slow?ms=1')).json().version as number
  const reloaded = (n: number): boolean => p.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: reloaded 2 workers')).length >= n

  const traffic = load(port, { clients: 50, minMs: 5, maxMs: 30, durationCap: 60000 })
  t.after(async () => { await traffic.stop() })
  writeFileSync(file, appSource(2))
  await waitFor(() => reloaded(1), 'the reload of edit 2', 30000)
  assert.equal(await version(), 2)

  writeFileSync(file, appSource(3, true))
  const failed = await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: the change does not start'), 30000, 'the broken edit')
  assert.match(String(failed.msg), /edit 3 is broken \(fixture\).*the old workers keep serving/)
  assert.match(String(failed.stack), /^Error: edit 3 is broken \(fixture\)\n\s+at /)
  for (let i = 0; i < 10; i++) assert.equal(await version(), 2, 'the old workers serve')

  writeFileSync(file, appSource(4))
  await waitFor(() => reloaded(2), 'the reload of edit 4', 30000)
  assert.equal(await version(), 4)
  const result = await traffic.stop()
  assert.deepEqual(result.errors, [], 'no request failed')
  assert.ok(result.ok > 100, `load ran (${result.ok} answers)`)
  assert.equal(p.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: the change does not start')).length, 1, 'the error printed once')

  const workers = [...new Set(p.lines.filter(ready).map((l) => l.workerPid as number))]
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
  for (const pid of workers) await waitFor(() => !isAlive(pid), `worker ${pid} gone`, 10000)
})

/** inotify watches held by `pid`: the `inotify wd:` lines of its inotify descriptors' fdinfo. */
function inotifyWatches (pid: number): number {
  let n = 0
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = ''
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue }
    if (target !== 'anon_inode:inotify') continue
    n += readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').split('\n').filter((l) => l.startsWith('inotify wd:')).length
  }
  return n
}

test('--watch spends no inotify watch under node_modules, .git or dist; a folder made later is watched', { skip: process.platform !== 'linux' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-watch-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'app.mjs'), appSource(1))
  // A dependency tree, VCS data and build output: 240 folders no edit of the app's is in.
  for (let i = 0; i < 200; i++) { mkdirSync(join(dir, 'node_modules', `pkg${i}`, 'lib'), { recursive: true }); writeFileSync(join(dir, 'node_modules', `pkg${i}`, 'lib', 'index.js'), '') }
  for (let i = 0; i < 20; i++) mkdirSync(join(dir, '.git', 'objects', `o${i}`), { recursive: true })
  for (let i = 0; i < 20; i++) mkdirSync(join(dir, 'dist', `d${i}`), { recursive: true })
  mkdirSync(join(dir, 'src'))
  const port = await freePort()
  const p = spawnNode(bin, { args: ['start', '--watch', '-w', '2', '-p', String(port), '-a', '127.0.0.1', join(dir, 'app.mjs')], env: { NCLUST_CONTROL: 'false' } })
  t.after(() => p.cleanup())
  await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: reloading on changes under'), 30000, 'the watcher')
  await waitFor(() => p.lines.filter((l) => l.role === 'primary' && l.msg === 'worker ready').length >= 2, '2 workers ready', 30000)
  const watches = inotifyWatches(p.pid)
  t.diagnostic(`inotify watches with 440 folders under node_modules, .git and dist: ${watches}`)
  assert.ok(watches >= 2 && watches <= 4, `the root and src only (${watches} watches)`)

  const reloads = (): LogLine[] => p.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: reloaded'))
  const reloadsFor = (file: string): boolean => p.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('watch: ') && Array.isArray(l.files) && (l.files as string[]).includes(file))
  mkdirSync(join(dir, 'src', 'later'))
  await waitFor(() => reloadsFor(join('src', 'later')) && reloads().length >= 1, 'the reload for the new folder', 30000)
  writeFileSync(join(dir, 'src', 'later', 'x.js'), '// edited')
  await waitFor(() => reloadsFor(join('src', 'later', 'x.js')), 'a change inside the folder made later', 30000)
  await waitFor(() => reloads().length >= 2, 'its reload', 30000)
})

test('a failed --watch reload blames the new worker of the failed slot, not an old worker that crashed meanwhile', async () => {
  const { blameFailedReload } = await import('../src/watch.ts')
  const before = new Map([[100, 0], [101, 1]]) // the old workers: pid -> slot
  const exit = (pid: number, workerId: number, reason: 'crash' | 'start-failed' | 'requested', error: string): WorkerExitEvent =>
    ({ workerId, pid, generation: pid === 100 || pid === 101 ? 0 : 1, code: 1, signal: null, reason, error })
  // In the order they happened: old worker 100 (slot 0) crashed first, then slot 0's new worker 200 failed.
  const exits = [exit(100, 0, 'crash', 'old worker: TypeError (unrelated)'), exit(101, 1, 'requested', 'asked'), exit(200, 0, 'start-failed', 'SyntaxError in the edit')]
  const fatals = new Map([
    [100, { message: 'old worker: TypeError (unrelated)', stack: 'TypeError: old\n    at old (/app/old.js:1:1)' }],
    [200, { message: 'SyntaxError in the edit', stack: 'SyntaxError: Unexpected token\n    at edit (/app/app.js:3:7)\n    at a\n    at b\n    at c\n    at d\n    at e\n    at f' }]
  ])
  const blamed = blameFailedReload(0, exits, fatals, before)
  assert.equal(blamed.pid, 200)
  assert.equal(blamed.message, 'SyntaxError in the edit')
  assert.equal(blamed.stack?.split('\n').length, 6, 'the top of the stack')
  assert.match(String(blamed.stack), /app\.js:3:7/)
  // No fatal message (killed at its start timeout): the exit's own error.
  assert.deepEqual(blameFailedReload(0, [exit(200, 0, 'start-failed', 'not ready within 30000ms')], new Map(), before), { pid: 200, message: 'not ready within 30000ms' })
  // The failed slot's new worker never exited (the reload gave up first): nothing to blame.
  assert.deepEqual(blameFailedReload(1, exits, fatals, before), {})
})
