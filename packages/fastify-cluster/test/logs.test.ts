// Logs a person can read: pretty lines (who wrote it first) when asked or on a terminal, JSON otherwise.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { distinct, freePort, isAlive, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { resolveOptions } from '../src/options.ts'
import { lineLogger } from '../src/primary/line-logger.ts'

const fixture = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))

test('NCLUST_LOG_FORMAT=pretty: human-readable lines, primary and worker lines told apart by their first words', async (t) => {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_LOG_FORMAT: 'pretty' } })
  t.after(() => p.cleanup())
  const workers = new Set<number>()
  t.after(() => { for (const pid of workers) { try { process.kill(pid, 'SIGKILL') } catch {} } })
  const out = (): string => p.output()
  await waitFor(() => (out().match(/INFO: primary › worker [01] \(\d+\) │ worker ready/g) ?? []).length === 2, 'the primary\'s ready line for both slots', 30000)
  for (const pid of await distinct(port, '/', (b: { pid: number }) => b.pid, 2)) workers.add(pid)
  assert.equal(workers.size, 2)
  const text = out()
  assert.match(text, new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\] INFO: primary \\(${p.pid}\\) │ workers: 2 \\(WORKER_COUNT\\) \\{"workers":2,`, 'm'))
  for (const pid of workers) assert.match(text, new RegExp(`INFO: worker [01] \\(${pid}\\) │ worker ready`), `worker ${pid}'s own line`)
  assert.doesNotMatch(text, /^\{"level"/m, 'no JSON line')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
  for (const pid of workers) await waitFor(() => !isAlive(pid), `worker ${pid} gone`, 10000)
})

test('stdout not a terminal: JSON lines (the format the test helper and log collectors parse)', () => {
  const logger = new URL('../dist/logger.js', import.meta.url).href
  const script = `const m = await import(${JSON.stringify(logger)}); m.createLogger(undefined, 'worker').info({ a: 1 }, 'hello'); m.createLogger(undefined, 'primary').info({ a: 2 }, 'hi')`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NCLUST_LOG_FORMAT: '' } })
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  // pino (worker) writes through sonic-boom, the primary's line logger synchronously: order is not the point
  assert.deepEqual(lines.map((l) => [l.role, l.a, l.msg]).sort(), [['primary', 2, 'hi'], ['worker', 1, 'hello']])
})

test('the primary\'s line logger writes pino\'s format: level, time, bindings, fields, err serialized, msg last', () => {
  const out: string[] = []
  const log = lineLogger('info', { role: 'primary', pid: 7 }, (l) => out.push(l)).child({ workerId: null })
  const err = Object.assign(new Error('boom'), { code: 'E_BOOM' })
  log.info({ workers: 2 }, 'starting')
  log.debug('not at info')
  log.error({ err }, 'failed')
  log.warn(err, 'direct error')
  const lines = out.map((l) => JSON.parse(l) as Record<string, any>)
  assert.equal(lines.length, 3)
  assert.deepEqual(Object.keys(lines[0] ?? {}), ['level', 'time', 'role', 'pid', 'workerId', 'workers', 'msg'])
  assert.deepEqual([lines[0]?.level, lines[0]?.workers, lines[0]?.msg], [30, 2, 'starting'])
  assert.deepEqual([lines[1]?.level, lines[1]?.err.type, lines[1]?.err.message, lines[1]?.err.code], [50, 'Error', 'boom', 'E_BOOM'])
  assert.match(lines[1]?.err.stack, /^Error: boom\n/)
  assert.deepEqual([lines[2]?.level, lines[2]?.err.message, lines[2]?.msg], [40, 'boom', 'direct error'])
})

test('a bad NCLUST_LOG_FORMAT is refused naming it', () => {
  assert.throws(() => resolveOptions({ env: { NCLUST_LOG_FORMAT: 'colour' } }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_CLUSTER_INVALID_OPTION')
    assert.equal(err.message, 'env NCLUST_LOG_FORMAT must be "pretty" or "json", got "colour"')
    return true
  })
  assert.equal(resolveOptions({ env: { NCLUST_LOG_FORMAT: 'pretty' } }).logFormat, 'pretty')
  assert.equal(resolveOptions({ env: { NCLUST_LOG_FORMAT: 'json' } }).logFormat, 'json')
})
