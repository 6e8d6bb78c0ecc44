import { test } from 'node:test'
import assert from 'node:assert/strict'
import { defaultWorkerCount } from '../src/cgroup.ts'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { resolveOptions, OPTION_TABLE } from '../src/options.ts'
import { spawnNode } from '../../../test/helpers/index.ts'

const fixture = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))

test('defaults: one worker per core (within the cgroup quota), port 3000 on 0.0.0.0, 30 s deadlines', () => {
  const o = resolveOptions({ env: {} })
  assert.equal(o.workers, defaultWorkerCount().workers)
  assert.equal(o.port, 3000)
  assert.equal(o.host, '0.0.0.0')
  assert.equal(o.shutdownTimeout, 30000)
  assert.equal(o.startTimeout, 30000)
  assert.deepEqual(o.restartBackoff, { initialDelay: 100, maxDelay: 15000, factor: 2, resetAfter: 60000 })
  assert.deepEqual(o.crashLoop, { maxFailures: 10, window: 60000 })
  assert.deepEqual(o.drain, {})
})

test('env vars are read, and an explicit option wins over its env var', () => {
  const env = { WORKER_COUNT: '3', PORT: '8080', HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '5000' }
  const o = resolveOptions({ env })
  assert.deepEqual([o.workers, o.port, o.host, o.shutdownTimeout], [3, 8080, '127.0.0.1', 5000])
  const p = resolveOptions({ env, workers: 2, port: 9000, host: '::1', shutdownTimeout: 100 })
  assert.deepEqual([p.workers, p.port, p.host, p.shutdownTimeout], [2, 9000, '::1', 100])
})

const bad: Array<[string, Parameters<typeof resolveOptions>[0], RegExp]> = [
  ['WORKER_COUNT=abc', { env: { WORKER_COUNT: 'abc' } }, /invalid env WORKER_COUNT: got "abc", expected an integer from 1 to 1024/],
  ['WORKER_COUNT=0', { env: { WORKER_COUNT: '0' } }, /invalid env WORKER_COUNT: got "0"/],
  ['WORKER_COUNT=-1', { env: { WORKER_COUNT: '-1' } }, /invalid env WORKER_COUNT: got "-1"/],
  ['WORKER_COUNT=1.5', { env: { WORKER_COUNT: '1.5' } }, /invalid env WORKER_COUNT: got "1.5"/],
  ['PORT=99999', { env: { PORT: '99999' } }, /invalid env PORT: got "99999", expected an integer from 0 to 65535/],
  ['SHUTDOWN_TIMEOUT=-5', { env: { SHUTDOWN_TIMEOUT: '-5' } }, /invalid env SHUTDOWN_TIMEOUT: got "-5", expected an integer number of ms/],
  ['HOST=" "', { env: { HOST: ' ' } }, /invalid env HOST/],
  ['workers: 0', { env: {}, workers: 0 }, /invalid option "workers": got 0/],
  ['shutdownTimeout: -1', { env: {}, shutdownTimeout: -1 }, /invalid option "shutdownTimeout": got -1/],
  ['startTimeout: "soon"', { env: {}, startTimeout: 'soon' as unknown as number }, /invalid option "startTimeout": got "soon"/],
  ['restartBackoff.factor: 0.5', { env: {}, restartBackoff: { factor: 0.5 } }, /invalid option "restartBackoff.factor": got 0.5/],
  ['restartBackoff max < initial', { env: {}, restartBackoff: { initialDelay: 500, maxDelay: 100 } }, /restartBackoff.maxDelay/],
  ['crashLoop.maxFailures: 0', { env: {}, crashLoop: { maxFailures: 0 } }, /invalid option "crashLoop.maxFailures": got 0/],
  ['unknown key', { env: {}, wrokers: 2 } as unknown as Parameters<typeof resolveOptions>[0], /unknown option "wrokers", expected one of: workers, port/],
  ['unknown nested key', { env: {}, crashLoop: { windowMs: 1 } as never }, /unknown option "crashLoop.windowMs"/],
  ['drain: "yes"', { env: {}, drain: 'yes' as never }, /invalid option "drain"/],
  ['LOG_LEVEL=loud', { env: { LOG_LEVEL: 'loud' } }, /invalid env LOG_LEVEL: got "loud"/]
]
for (const [name, options, message] of bad) {
  test(`invalid: ${name} throws a coded error naming it`, () => {
    assert.throws(() => resolveOptions(options), (err: Error & { code?: string }) => {
      assert.match(err.message, message)
      assert.match(err.code ?? '', /^NCLUST_(INVALID|UNKNOWN)_OPTION$/)
      return true
    })
  })
}

test('a real entry script with a bad env var exits 1 before any fork, with one line naming it', async (t) => {
  for (const [envName, value, expected] of [
    ['WORKER_COUNT', 'abc', /^nclust: NCLUST_INVALID_OPTION: invalid env WORKER_COUNT: got "abc", expected an integer from 1 to 1024\n$/],
    ['WORKER_COUNT', '0', /invalid env WORKER_COUNT: got "0"/],
    ['WORKER_COUNT', '-1', /invalid env WORKER_COUNT: got "-1"/],
    ['PORT', '99999', /invalid env PORT: got "99999", expected an integer from 0 to 65535/],
    ['SHUTDOWN_TIMEOUT', '-1', /invalid env SHUTDOWN_TIMEOUT: got "-1"/]
  ] as const) {
    const p = spawnNode(fixture, { env: { [envName]: value, WORKER_COUNT: envName === 'WORKER_COUNT' ? value : '2' } })
    t.after(() => p.cleanup())
    const { code } = await p.waitForExit(15000)
    assert.equal(code, 1, `${envName}=${value} exits 1`)
    assert.match(p.stderr(), expected)
    assert.equal(p.stderr().trim().split('\n').length, 1, 'exactly one line')
    assert.equal(p.lines.filter((l) => l.msg === 'worker forked').length, 0, 'nothing forked')
  }
  const unknown = spawnNode(fixture, { env: { WORKER_COUNT: '2', FIXTURE_OPTIONS: JSON.stringify({ wrokers: 2 }) } })
  t.after(() => unknown.cleanup())
  assert.equal((await unknown.waitForExit(15000)).code, 1)
  assert.match(unknown.stderr(), /NCLUST_UNKNOWN_OPTION: unknown option "wrokers"/)
})

test('the README option table lists every option, env var and default from OPTION_TABLE', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  for (const row of OPTION_TABLE) {
    const line = readme.split('\n').find((l) => l.startsWith(`| \`${row.option}\``))
    assert.ok(line, `README has a table row for ${row.option}`)
    if (row.env !== null) assert.ok(line.includes(row.env.split(' ')[0] ?? ''), `row ${row.option} names env ${row.env}`)
    assert.ok(line.includes(row.default), `row ${row.option} gives default ${row.default}`)
  }
})
