import { test } from 'node:test'
import assert from 'node:assert/strict'
import { defaultWorkerCount } from '../src/cgroup.ts'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'
import { resolveOptions, SETTINGS, defaultText, drainTimeoutFor, minShutdownTimeout, type Setting, type SettingName } from '../src/options.ts'
import { optionTable, flagTable, replaceSection } from '../src/options-doc.ts'
import { HELP } from '../src/cli.ts'
import { errors as clusterErrors } from '../src/errors.ts'
import { errors as drainErrors } from '../../fastify-drain/src/errors.ts'
import { errors as metricsErrors } from '../../fastify-pidmetrics/src/errors.ts'
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
  assert.deepEqual(o.drain, { timeout: 27000 }, 'the drain deadline derived from shutdownTimeout, filled in once')
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
})

test('hangProbe: on-hang by default, after-hang read as on-hang, NCLUST_HANG_PROBE, the option wins, anything else named', () => {
  assert.equal(resolveOptions({ env: {} }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'after-hang' } }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: {}, hangProbe: 'after-hang' }).hangProbe, 'on-hang')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'always' } }).hangProbe, 'always')
  assert.equal(resolveOptions({ env: { NCLUST_HANG_PROBE: 'always' }, hangProbe: 'off' }).hangProbe, 'off')
  assert.throws(() => resolveOptions({ env: { NCLUST_HANG_PROBE: 'yes' } }), /env NCLUST_HANG_PROBE must be "on-hang", "always", "off" or "after-hang" \(read as "on-hang"\), got "yes"/)
  assert.equal(resolveOptions({ env: {} }).reportMaxFiles, 20)
  assert.equal(resolveOptions({ env: { NCLUST_REPORT_MAX_FILES: '3', NCLUST_REPORT_MAX_BYTES: '4096' } }).reportMaxBytes, 4096)
  assert.throws(() => resolveOptions({ env: { NCLUST_REPORT_MAX_FILES: '0' } }), /env NCLUST_REPORT_MAX_FILES must be an integer from 1 to 100000, got "0"/)
})

test('env vars are read, and an explicit option wins over its env var', () => {
  const env = { WORKER_COUNT: '3', PORT: '8080', HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '5000' }
  const o = resolveOptions({ env })
  assert.deepEqual([o.workers, o.port, o.host, o.shutdownTimeout], [3, 8080, '127.0.0.1', 5000])
  const p = resolveOptions({ env, workers: 2, port: 9000, host: '::1', shutdownTimeout: 1000 })
  assert.deepEqual([p.workers, p.port, p.host, p.shutdownTimeout], [2, 9000, '::1', 1000])
})

const bad: Array<[string, Parameters<typeof resolveOptions>[0], RegExp]> = [
  ['WORKER_COUNT=abc', { env: { WORKER_COUNT: 'abc' } }, /^env WORKER_COUNT must be an integer from 1 to 1024, got "abc"$/],
  ['WORKER_COUNT=0', { env: { WORKER_COUNT: '0' } }, /env WORKER_COUNT must be .*, got "0"/],
  ['WORKER_COUNT=-1', { env: { WORKER_COUNT: '-1' } }, /env WORKER_COUNT must be .*, got "-1"/],
  ['WORKER_COUNT=1.5', { env: { WORKER_COUNT: '1.5' } }, /env WORKER_COUNT must be .*, got "1.5"/],
  ['PORT=99999', { env: { PORT: '99999' } }, /^env PORT must be an integer from 0 to 65535, got "99999"$/],
  ['PORT=-0', { env: { PORT: '-0' } }, /^env PORT must be an integer from 0 to 65535, got "-0"$/],
  ['port: -0', { env: {}, port: -0 }, /^option port must be an integer from 0 to 65535, got -0$/],
  ['SHUTDOWN_TIMEOUT=-5', { env: { SHUTDOWN_TIMEOUT: '-5' } }, /^env SHUTDOWN_TIMEOUT must be an integer number of ms from 1 to 2147483647, got "-5"$/],
  ['HOST=" "', { env: { HOST: ' ' } }, /^env HOST must be a non-empty host name or address, got " "$/],
  ['workers: 0', { env: {}, workers: 0 }, /^option workers must be an integer from 1 to 1024, got 0$/],
  ['shutdownTimeout: -1', { env: {}, shutdownTimeout: -1 }, /^option shutdownTimeout must be .*, got -1$/],
  ['startTimeout: "soon"', { env: {}, startTimeout: 'soon' as unknown as number }, /^option startTimeout must be .*, got "soon"$/],
  ['restartBackoff.factor: 0.5', { env: {}, restartBackoff: { factor: 0.5 } }, /^option restartBackoff.factor must be .*, got 0.5$/],
  ['restartBackoff max < initial', { env: {}, restartBackoff: { initialDelay: 500, maxDelay: 100 } }, /^option restartBackoff.maxDelay must be a value >= restartBackoff.initialDelay \(500\), got 100$/],
  ['crashLoop.maxFailures: 0', { env: {}, crashLoop: { maxFailures: 0 } }, /^option crashLoop.maxFailures must be a positive integer, got 0$/],
  ['unknown key', { env: {}, wrokers: 2 } as unknown as Parameters<typeof resolveOptions>[0], /^unknown option wrokers, expected one of workers, port/],
  ['unknown nested key', { env: {}, crashLoop: { windowMs: 1 } as never }, /^unknown option crashLoop.windowMs, expected one of maxFailures, window$/],
  ['drain: "yes"', { env: {}, drain: 'yes' as never }, /^option drain must be true, false or an object of @nclust\/fastify-drain options, got "yes"$/],
  ['LOG_LEVEL=loud', { env: { LOG_LEVEL: 'loud' } }, /^env LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"$/],
  ['logger: 7', { env: {}, logger: 7 as never }, /^option logger must be a pino logger, pino options or false, got 7$/],
  ['handleSignals: "no"', { env: {}, handleSignals: 'no' as never }, /^option handleSignals must be a boolean, got "no"$/],
  ['env: 7', { env: 7 as never }, /^option env must be an object of strings, got 7$/],
  ['SHUTDOWN_TIMEOUT under the drain minimum', { env: { SHUTDOWN_TIMEOUT: '278' } }, /^env SHUTDOWN_TIMEOUT must be at least 279 ms: the drain's deadline .* must exceed its linger \(250 ms\).*, got 278$/],
  ['shutdownTimeout under the minimum for a longer linger', { env: {}, shutdownTimeout: 1000, drain: { linger: 1000 } }, /^option shutdownTimeout must be at least 1113 ms: .*linger \(1000 ms\).*, got 1000$/],
  ['drain.timeout = shutdownTimeout', { env: {}, drain: { timeout: 30000 } }, /^option drain.timeout must be below shutdownTimeout \(30000, the default\), the deadline at which workers are SIGKILLed, got 30000$/],
  ['drain.timeout above SHUTDOWN_TIMEOUT', { env: { SHUTDOWN_TIMEOUT: '10000' }, drain: { timeout: 20000 } }, /^option drain.timeout must be below shutdownTimeout \(10000, from env SHUTDOWN_TIMEOUT\).*, got 20000$/],
  ['drain.timeout: "1s"', { env: {}, drain: { timeout: '1s' as never } }, /^option drain.timeout must be an integer number of ms from 1, below shutdownTimeout \(30000\), got "1s"$/],
  ['START_RETRIES=-1', { env: { START_RETRIES: '-1' } }, /^env START_RETRIES must be an integer from 0 to 100, got "-1"$/],
  ['HEARTBEAT_TIMEOUT=soon', { env: { HEARTBEAT_TIMEOUT: 'soon' } }, /^env HEARTBEAT_TIMEOUT must be .*, got "soon"$/],
  ['HEARTBEAT_TIMEOUT=500 (below the interval)', { env: { HEARTBEAT_TIMEOUT: '500' } }, /^env HEARTBEAT_TIMEOUT must be 0 \(off\) or a value above heartbeatInterval \(1000\), got 500$/],
  ['heartbeatInterval: 0', { env: {}, heartbeatInterval: 0 }, /^option heartbeatInterval must be .*, got 0$/],
  ['MAX_REQUESTS=1e3', { env: { MAX_REQUESTS: '1e3' } }, /^env MAX_REQUESTS must be 0 \(off\) or a positive integer, got "1e3"$/],
  ['maxRequestsJitter: -1', { env: {}, maxRequestsJitter: -1 }, /^option maxRequestsJitter must be a non-negative integer, got -1$/],
  ['MAX_RSS=1.5', { env: { MAX_RSS: '1.5' } }, /^env MAX_RSS must be MB: 0 \(off\) or a positive integer, got "1.5"$/],
  ['NCLUST_REPORT_DIR=reports', { env: { NCLUST_REPORT_DIR: 'reports' } }, /^env NCLUST_REPORT_DIR must be an absolute path, got "reports"$/],
  ['reportDirectory: 7', { env: {}, reportDirectory: 7 as unknown as string }, /^option reportDirectory must be an absolute path, got 7$/],
  ['NCLUST_HANG_PROBE=yes', { env: { NCLUST_HANG_PROBE: 'yes' } }, /^env NCLUST_HANG_PROBE must be "on-hang", "always", "off" or "after-hang" \(read as "on-hang"\), got "yes"$/]
]
for (const [name, options, message] of bad) {
  test(`invalid: ${name} throws a coded error naming it`, () => {
    assert.throws(() => resolveOptions(options), (err: Error & { code?: string }) => {
      assert.match(err.message, message)
      assert.match(err.code ?? '', /^NCLUST_CLUSTER_(INVALID|UNKNOWN)_OPTION$/)
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
  assert.deepEqual(resolveOptions({ env: {}, shutdownTimeout: 100, drain: { timeout: 50, linger: 10 } }).drain, { timeout: 50, linger: 10 }, 'a drain timeout below shutdownTimeout is kept')
  assert.equal(resolveOptions({ env: {}, drain: false }).drain, false)
})

test('a real entry script with a bad env var exits 1 before any fork, with one line naming it', async (t) => {
  for (const [envName, value, expected] of [
    ['WORKER_COUNT', 'abc', /^nclust: NCLUST_CLUSTER_INVALID_OPTION: env WORKER_COUNT must be an integer from 1 to 1024, got "abc"\n$/],
    ['WORKER_COUNT', '0', /env WORKER_COUNT must be .*, got "0"/],
    ['PORT', '-0', /env PORT must be an integer from 0 to 65535, got "-0"/],
    ['SHUTDOWN_TIMEOUT', '200', /env SHUTDOWN_TIMEOUT must be at least 279 ms.*, got 200/]
  ] as const) {
    const p = spawnNode(fixture, { env: { [envName]: value, WORKER_COUNT: envName === 'WORKER_COUNT' ? value : '2' } })
    t.after(() => p.cleanup())
    const { code } = await p.waitForExit(15000)
    assert.equal(code, 1, `${envName}=${value} exits 1`)
    assert.match(p.stderr(), expected)
    assert.equal(p.stderr().trim().split('\n').length, 1, 'exactly one line')
    assert.equal(p.lines.filter((l) => l.msg === 'worker forked').length, 0, 'nothing forked (the first forks precede any event listener: the log line is their record)')
  }
  const unknown = spawnNode(fixture, { env: { WORKER_COUNT: '2', FIXTURE_OPTIONS: JSON.stringify({ wrokers: 2 }) } })
  t.after(() => unknown.cleanup())
  assert.equal((await unknown.waitForExit(15000)).code, 1)
  assert.match(unknown.stderr(), /^nclust: NCLUST_CLUSTER_UNKNOWN_OPTION: unknown option wrokers, expected one of workers/)
})

/**
 * A good and a bad text for every setting read from an env var or a flag, and what the good one
 * resolves to. A new setting with an env var or flag fails 'every env var ...' until it is added here.
 */
const TEXT: Partial<Record<SettingName, { good: string, value: unknown, bad: string }>> = {
  workers: { good: '3', value: 3, bad: 'abc' },
  port: { good: '8080', value: 8080, bad: '-0' },
  host: { good: '127.0.0.1', value: '127.0.0.1', bad: ' ' },
  balance: { good: 'sticky', value: 'sticky', bad: 'round-robin' },
  stickyWait: { good: '5000', value: 5000, bad: '-1' },
  stickyQueue: { good: '10', value: 10, bad: '1000001' },
  proxyProtocol: { good: '0', value: false, bad: 'yes' },
  shutdownTimeout: { good: '5000', value: 5000, bad: '5s' },
  startRetries: { good: '5', value: 5, bad: '101' },
  heartbeatTimeout: { good: '0', value: 0, bad: 'soon' },
  reportDirectory: { good: '/srv/reports', value: '/srv/reports', bad: 'reports' },
  hangProbe: { good: 'always', value: 'always', bad: 'yes' },
  reportMaxFiles: { good: '5', value: 5, bad: '0' },
  reportMaxBytes: { good: '4096', value: 4096, bad: '4k' },
  maxRequests: { good: '100', value: 100, bad: '1e3' },
  maxRss: { good: '512', value: 512, bad: '1.5' },
  logger: { good: 'warn', value: { level: 'warn' }, bad: 'loud' },
  logFormat: { good: 'json', value: 'json', bad: 'colour' },
  control: { good: '/run/x.sock', value: '/run/x.sock', bad: `/${'x'.repeat(120)}.sock` }
}
const settings = Object.entries(SETTINGS) as Array<[SettingName, Setting<unknown>]>
const resolvedOf = (o: ReturnType<typeof resolveOptions>, key: SettingName): unknown => (o as unknown as Record<string, unknown>)[key]

test('every env var and flag is read from its one declaration; a flag wins over its env var; an empty one counts as unset', () => {
  for (const [key, s] of settings) {
    if (s.env === null && s.flag === undefined) continue
    const text = TEXT[key]
    assert.ok(text, `TEXT has samples for ${key}`)
    if (s.env !== null) {
      assert.deepEqual(resolvedOf(resolveOptions({ env: { [s.env]: text.good } }), key), text.value, `env ${s.env}`)
      assert.deepEqual(resolvedOf(resolveOptions({ env: { [s.env]: '' } }), key), resolvedOf(resolveOptions({ env: {} }), key), `empty ${s.env} is unset`)
      assert.throws(() => resolveOptions({ env: { [s.env ?? '']: text.bad } }), (err: Error & { code?: string }) =>
        err.code === 'NCLUST_CLUSTER_INVALID_OPTION' && err.message.startsWith(`env ${s.env ?? ''} must be `) && err.message.endsWith(`, got ${JSON.stringify(text.bad)}`), `bad ${s.env}`)
    }
    if (s.flag !== undefined && s.option !== null) {
      const env = s.env !== null ? { [s.env]: text.bad } : {}
      assert.deepEqual(resolvedOf(resolveOptions({ env }, { [s.option]: text.good }), key), text.value, `--${s.flag.name} wins over its env var`)
      assert.throws(() => resolveOptions({ env: {} }, { [s.option ?? '']: text.bad }), (err: Error) =>
        err.message.startsWith(`--${s.flag?.name ?? ''} must be `) && err.message.endsWith(`, got ${JSON.stringify(text.bad)}`), `bad --${s.flag.name}`)
    }
  }
})

test('every declared default is what resolveOptions gives when nothing is set, and what the docs show', () => {
  const o = resolveOptions({ env: {} })
  for (const [key, s] of settings) {
    if (s.default === undefined || key === 'drain') continue
    assert.deepEqual(resolvedOf(o, key), s.default, `default of ${key}`)
    if (s.defaultText === undefined) assert.ok(optionTable().includes(`| ${defaultText(s)} |`), `README default of ${key}`)
  }
  assert.deepEqual(o.drain, { timeout: drainTimeoutFor(SETTINGS.shutdownTimeout.default ?? 0) })
})

test('the README option and flag tables are made from the declarations (node scripts/readme-options.mjs writes them)', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  assert.equal(readme, replaceSection(replaceSection(readme, 'options', optionTable()), 'flags', flagTable()),
    'README tables differ from src/options.ts: pnpm build && node packages/fastify-cluster/scripts/readme-options.mjs')
  for (const [, s] of settings) {
    if (s.option !== null) assert.ok(optionTable().includes(`| \`${s.option}\` |`), `a row for ${s.option}`)
  }
})

test('nclust --help lists every flag with its env var and default, and every env-only variable', () => {
  for (const [, s] of settings) {
    if (s.flag !== undefined) {
      const line = HELP.split('\n').find((l) => l.includes(`--${s.flag?.name ?? ''} <`))
      assert.ok(line, `--${s.flag.name} in --help`)
      assert.ok(line.includes(`(env ${s.env ?? '-'}; default ${defaultText(s)})`), line)
      if (s.flag.short !== undefined) assert.ok(line.startsWith(`  -${s.flag.short}, --${s.flag.name}`), line)
    } else if (s.env !== null) assert.ok(HELP.includes(s.env), `${s.env} in --help`)
  }
})

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const cliApp = fileURLToPath(new URL('./fixtures/cli-app', import.meta.url))
test('nclust start: a bad value of every env var and every flag exits 1 with one line naming it, before anything starts', () => {
  const run = (args: string[], env: Record<string, string>): { status: number | null, stdout: string, stderr: string } => {
    const r = spawnSync(process.execPath, [bin, 'start', ...args, './app.js'], { cwd: cliApp, env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 30000 })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  let cases = 0
  for (const [key, s] of settings) {
    const text = TEXT[key]
    if (text === undefined) continue
    const tries: Array<[string, string[], Record<string, string>]> = []
    if (s.env !== null) tries.push([`env ${s.env}`, [], { [s.env]: text.bad }])
    if (s.flag !== undefined) tries.push([`--${s.flag.name}`, [`--${s.flag.name}=${text.bad}`], {}])
    for (const [label, args, env] of tries) {
      const r = run(args, env)
      assert.equal(r.status, 1, `${label}=${text.bad} exits 1 (${r.stderr})`)
      assert.equal(r.stdout, '', `${label}: nothing started`)
      const line = `nclust: NCLUST_CLUSTER_INVALID_OPTION: ${label} must be `
      assert.ok(r.stderr.startsWith(line) && r.stderr.endsWith(`, got ${JSON.stringify(text.bad)}\n`) && r.stderr.split('\n').length === 2, `${label}: ${r.stderr}`)
      cases += 1
    }
  }
  assert.equal(cases, 25, 'every env var and flag was tried')
})

test('one error convention: NCLUST_<PACKAGE>_* codes, one message template, each package README lists its codes', () => {
  const packages = [['fastify-cluster', 'CLUSTER', clusterErrors], ['fastify-drain', 'DRAIN', drainErrors], ['fastify-pidmetrics', 'PIDMETRICS', metricsErrors]] as const
  for (const [dir, part, errors] of packages) {
    const codes = Object.keys(errors)
    for (const code of codes) assert.match(code, new RegExp(`^NCLUST_${part}_[A-Z_]+$`))
    const Invalid = (errors as Record<string, new (...a: string[]) => Error & { code: string }>)[`NCLUST_${part}_INVALID_OPTION`]
    assert.ok(Invalid, `${dir} has NCLUST_${part}_INVALID_OPTION`)
    const e = new Invalid('option x', 'an integer', '"y"')
    assert.deepEqual([e.code, e.message, e instanceof TypeError], [`NCLUST_${part}_INVALID_OPTION`, 'option x must be an integer, got "y"', true])
    const readme = readFileSync(new URL(`../../${dir}/README.md`, import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('### Errors'))
    assert.ok(readme.includes('### Errors'), `${dir} README has an Errors section`)
    const listed = [...section.slice(0, section.indexOf('\n## ') === -1 ? undefined : section.indexOf('\n## ')).matchAll(/^\| `(NCLUST_[A-Z_]+)` \|/gm)].map((m) => m[1])
    assert.deepEqual(listed, codes, `${dir} README's Errors table lists exactly the exported codes, in order`)
  }
})
