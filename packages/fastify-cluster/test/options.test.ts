import { test } from 'node:test'
import assert from 'node:assert/strict'
import { defaultWorkerCount } from '../src/cgroup.ts'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { resolveOptions, OPTION_TABLE, drainTimeoutFor, minShutdownTimeout } from '../src/options.ts'
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
  assert.deepEqual([o.startRetries, o.heartbeatInterval, o.heartbeatTimeout, o.maxRequests, o.maxRequestsJitter, o.maxRss], [2, 1000, 30000, 0, 0, 0])
})

test('lifecycle env vars: START_RETRIES, HEARTBEAT_TIMEOUT (0 is off), MAX_REQUESTS, MAX_RSS', () => {
  const o = resolveOptions({ env: { START_RETRIES: '5', HEARTBEAT_TIMEOUT: '0', MAX_REQUESTS: '10000', MAX_RSS: '512' } })
  assert.deepEqual([o.startRetries, o.heartbeatTimeout, o.maxRequests, o.maxRss], [5, 0, 10000, 512])
  const p = resolveOptions({ env: { HEARTBEAT_TIMEOUT: '0' }, heartbeatTimeout: 5000, heartbeatInterval: 100, maxRequestsJitter: 50 })
  assert.deepEqual([p.heartbeatTimeout, p.heartbeatInterval, p.maxRequestsJitter], [5000, 100, 50])
})

test('reportDirectory: NCLUST_REPORT_DIR, the option wins, private default under XDG_STATE_HOME or ~/.local/state, never the temp folder', () => {
  assert.deepEqual([resolveOptions({ env: { NCLUST_REPORT_DIR: '/srv/reports' } }).reportDirectory, resolveOptions({ env: { NCLUST_REPORT_DIR: '/srv/reports' } }).reportDirectoryIsDefault], ['/srv/reports', false])
  assert.equal(resolveOptions({ env: { NCLUST_REPORT_DIR: '/a' }, reportDirectory: '/b' }).reportDirectory, '/b')
  const d = resolveOptions({ env: { XDG_STATE_HOME: '/home/u/.state' } })
  assert.deepEqual([d.reportDirectory, d.reportDirectoryIsDefault], ['/home/u/.state/nclust/reports', true])
  assert.match(resolveOptions({ env: { NCLUST_REPORT_DIR: '' } }).reportDirectory, /\/\.local\/state\/nclust\/reports$/)
  assert.throws(() => resolveOptions({ env: { NCLUST_REPORT_DIR: 'reports' } }), /invalid env NCLUST_REPORT_DIR: got "reports", expected an absolute path/)
  assert.throws(() => resolveOptions({ env: {}, reportDirectory: 7 as unknown as string }), /invalid option "reportDirectory": got 7, expected an absolute path/)
})

test('hangProbe: on-hang by default, after-hang read as on-hang, NCLUST_HANG_PROBE, the option wins, anything else named', () => {
  assert.equal(resolveOptions({ env: {} }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'after-hang' } }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: {}, hangProbe: 'after-hang' }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'always' } }).hangProbe, 'always')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'always' }, hangProbe: 'off' }).hangProbe, 'off')
  assert.throws(() => resolveOptions({ env: { NCLUST_HANG_PROBE: 'yes' } }), /invalid env NCLUST_HANG_PROBE: got "yes", expected "on-hang", "always", "off" or "after-hang"/)
  assert.equal(resolveOptions({ env: {} }).reportMaxFiles, 20)
  assert.equal(resolveOptions({ env: { NCLUST_REPORT_MAX_FILES: '3', NCLUST_REPORT_MAX_BYTES: '4096' } }).reportMaxBytes, 4096)
  assert.throws(() => resolveOptions({ env: { NCLUST_REPORT_MAX_FILES: '0' } }), /invalid env NCLUST_REPORT_MAX_FILES: got "0"/)
})

test('env vars are read, and an explicit option wins over its env var', () => {
  const env = { WORKER_COUNT: '3', PORT: '8080', HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '5000' }
  const o = resolveOptions({ env })
  assert.deepEqual([o.workers, o.port, o.host, o.shutdownTimeout], [3, 8080, '127.0.0.1', 5000])
  const p = resolveOptions({ env, workers: 2, port: 9000, host: '::1', shutdownTimeout: 1000 })
  assert.deepEqual([p.workers, p.port, p.host, p.shutdownTimeout], [2, 9000, '::1', 1000])
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
  ['LOG_LEVEL=loud', { env: { LOG_LEVEL: 'loud' } }, /invalid env LOG_LEVEL: got "loud"/],
  ['SHUTDOWN_TIMEOUT under the drain minimum', { env: { SHUTDOWN_TIMEOUT: '278' } }, /invalid env SHUTDOWN_TIMEOUT: got "278", expected at least 279 ms: the drain's deadline .* must exceed its linger \(250 ms\)/],
  ['shutdownTimeout under the minimum for a longer linger', { env: {}, shutdownTimeout: 1000, drain: { linger: 1000 } }, /invalid option "shutdownTimeout": got 1000, expected at least 1113 ms: .*linger \(1000 ms\)/],
  ['START_RETRIES=-1', { env: { START_RETRIES: '-1' } }, /invalid env START_RETRIES: got "-1", expected an integer from 0 to 100/],
  ['HEARTBEAT_TIMEOUT=soon', { env: { HEARTBEAT_TIMEOUT: 'soon' } }, /invalid env HEARTBEAT_TIMEOUT: got "soon"/],
  ['HEARTBEAT_TIMEOUT=500 (below the interval)', { env: { HEARTBEAT_TIMEOUT: '500' } }, /invalid env HEARTBEAT_TIMEOUT: got 500, expected 0 \(off\) or a value above heartbeatInterval \(1000\)/],
  ['heartbeatInterval: 0', { env: {}, heartbeatInterval: 0 }, /invalid option "heartbeatInterval": got 0/],
  ['MAX_REQUESTS=1e3', { env: { MAX_REQUESTS: '1e3' } }, /invalid env MAX_REQUESTS: got "1e3", expected 0 \(off\) or a positive integer/],
  ['maxRequestsJitter: -1', { env: {}, maxRequestsJitter: -1 }, /invalid option "maxRequestsJitter": got -1/],
  ['MAX_RSS=1.5', { env: { MAX_RSS: '1.5' } }, /invalid env MAX_RSS: got "1.5", expected MB/]
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

test('empty env vars count as unset, HOST included', () => {
  const o = resolveOptions({ env: { HOST: '', PORT: '', WORKER_COUNT: '', SHUTDOWN_TIMEOUT: '', LOG_LEVEL: '' } })
  assert.deepEqual([o.host, o.port, o.workers, o.shutdownTimeout], ['0.0.0.0', 3000, defaultWorkerCount().workers, 30000])
})

test('the drain deadline derived from shutdownTimeout, and the smallest shutdownTimeout it fits in', () => {
  // shutdownTimeout minus min(5 s, 10 %): 30 s -> 27 s, 60 s -> 55 s, 1 s -> 900 ms.
  assert.deepEqual([30000, 60000, 1000, 279].map(drainTimeoutFor), [27000, 55000, 900, 251])
  assert.equal(minShutdownTimeout({}), 279, 'the default linger (250 ms) needs a 251 ms drain deadline')
  assert.ok(drainTimeoutFor(minShutdownTimeout({})) > 250 && drainTimeoutFor(minShutdownTimeout({}) - 1) <= 250)
  assert.equal(minShutdownTimeout({ linger: 0 }), 1)
  assert.equal(minShutdownTimeout({ delay: 5000 }), 5557)
  assert.equal(minShutdownTimeout(false), 1, 'no drain, no minimum')
  assert.equal(minShutdownTimeout({ timeout: 50 }), 1, 'an explicit drain timeout does not derive from shutdownTimeout')
  assert.equal(resolveOptions({ env: { SHUTDOWN_TIMEOUT: '279' } }).shutdownTimeout, 279)
  assert.equal(resolveOptions({ env: { SHUTDOWN_TIMEOUT: '100' }, drain: false }).shutdownTimeout, 100)
  assert.equal(resolveOptions({ env: {}, shutdownTimeout: 100, drain: { timeout: 50 } }).shutdownTimeout, 100)
})

test('a real entry script with a bad env var exits 1 before any fork, with one line naming it', async (t) => {
  for (const [envName, value, expected] of [
    ['WORKER_COUNT', 'abc', /^nclust: NCLUST_INVALID_OPTION: invalid env WORKER_COUNT: got "abc", expected an integer from 1 to 1024\n$/],
    ['WORKER_COUNT', '0', /invalid env WORKER_COUNT: got "0"/],
    ['WORKER_COUNT', '-1', /invalid env WORKER_COUNT: got "-1"/],
    ['PORT', '99999', /invalid env PORT: got "99999", expected an integer from 0 to 65535/],
    ['SHUTDOWN_TIMEOUT', '-1', /invalid env SHUTDOWN_TIMEOUT: got "-1"/],
    ['SHUTDOWN_TIMEOUT', '200', /invalid env SHUTDOWN_TIMEOUT: got "200", expected at least 279 ms/]
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
