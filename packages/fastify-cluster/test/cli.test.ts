// `nclust start`: real processes through the committed bin, as a user types it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { distinct, freePort, get, isAlive, spawnNode, waitFor, type LogLine } from '../../../test/helpers/index.ts'

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const cliApp = fileURLToPath(new URL('./fixtures/cli-app', import.meta.url))
const buildAppModule = fileURLToPath(new URL('./fixtures/build-app/app.mjs', import.meta.url))
const primaryReady = (l: LogLine): boolean => l.role === 'primary' && l.msg === 'worker ready'

/** Run the bin to completion (for the cases that must exit at once). */
function runBin (args: string[], env: Record<string, string> = {}): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: cliApp, env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 30000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('nclust start ./app.js runs a fastify-cli generated app on 2 workers: both pids serve, SIGHUP reloads, SIGTERM exits 0', async (t) => {
  const port = await freePort()
  const p = spawnNode(bin, { args: ['start', '-w', '2', '-p', String(port), '-a', '127.0.0.1', './app.js'], cwd: cliApp })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 30000)

  const pids = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.equal(pids.size, 2)
  assert.ok(![...pids].includes(p.pid), 'the primary does not serve')
  const root = await get(port, '/')
  assert.equal(root.status, 200)
  assert.equal(root.json().support, 'hugs', 'the autoloaded fastify-plugin decorator is there')
  const example = await get(port, '/example')
  assert.equal(example.status, 200)
  assert.equal(example.body, 'this is an example')

  p.child.kill('SIGHUP')
  const done = await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('rolling reload done') && l.ok === true && l.replaced === 2, 60000, 'the reload')
  assert.equal(done.replaced, 2)
  const after = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.equal(after.size, 2)
  for (const pid of pids) assert.ok(!after.has(pid), `old worker ${pid} replaced`)
  for (const pid of pids) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30000)

  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
  for (const pid of after) await waitFor(() => !isAlive(pid), `worker ${pid} gone`, 10000)
})

test('a module exporting buildApp: env vars as with startClustered, and the primary never imports the app', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-cli-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const importedBy = join(dir, 'imported-by')
  const port = await freePort()
  const p = spawnNode(bin, {
    args: ['start', buildAppModule],
    env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', IMPORTED_BY_FILE: importedBy }
  })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 30000)
  const workers = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.equal(workers.size, 2)
  const importers = readFileSync(importedBy, 'utf8').trim().split('\n').map(Number).sort()
  assert.deepEqual(importers, [...workers].sort(), 'imported by each worker once, never by the primary')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('nclust --help prints the usage and exits 0; --version prints the package version', () => {
  const help = runBin(['--help'])
  assert.equal(help.status, 0)
  assert.match(help.stdout, /^Usage: nclust start \[flags\] <app module>/)
  for (const flag of ['-w, --workers', '-p, --port', '-a, --address', '-l, --log-level', '--shutdown-timeout']) assert.ok(help.stdout.includes(flag), flag)
  const version = runBin(['--version'])
  assert.equal(version.status, 0)
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version)
})

const refusals: Array<[string, string[], Record<string, string>, string]> = [
  ['an unknown flag', ['start', '--wrokers', '2', './app.js'], {}, 'nclust: unknown flag --wrokers (nclust --help lists them)'],
  ['a bad flag value', ['start', '-w', 'abc', './app.js'], {}, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: --workers must be an integer from 1 to 1024, got "abc"'],
  ['a bad port', ['start', '--port', '70000', './app.js'], {}, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: --port must be an integer from 0 to 65535, got "70000"'],
  ['a bad log level', ['start', '-l', 'loud', './app.js'], {}, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: --log-level must be one of fatal, error, warn, info, debug, trace, silent, got "loud"'],
  ['a flag beside a bad env var: the flag wins', ['start', '-w', '0', './app.js'], { WORKER_COUNT: '2' }, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: --workers must be an integer from 1 to 1024, got "0"'],
  ['a flag without its value', ['start', './app.js', '-p'], {}, 'nclust: flag -p, --port needs a value (nclust --help)'],
  ['a bad env var', ['start', './app.js'], { WORKER_COUNT: 'abc' }, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: env WORKER_COUNT must be an integer from 1 to 1024, got "abc"'],
  ['PORT=-0', ['start', './app.js'], { PORT: '-0' }, 'nclust: NCLUST_CLUSTER_INVALID_OPTION: env PORT must be an integer from 0 to 65535, got "-0"'],
  ['a missing module', ['start', './nope.js'], {}, `nclust: NCLUST_CLUSTER_INVALID_APP: app module ./nope.js not found (looked for ${join(cliApp, 'nope.js')})`],
  ['no command', [], {}, 'nclust: missing command: nclust start <app module> (nclust --help)']
]
for (const [what, args, env, line] of refusals) {
  test(`${what}: exit 1 with one line naming it, nothing started`, () => {
    const r = runBin(args, env)
    assert.equal(r.status, 1)
    assert.equal(r.stderr, `${line}\n`)
    assert.equal(r.stdout, '', 'no worker was forked, nothing logged')
  })
}
