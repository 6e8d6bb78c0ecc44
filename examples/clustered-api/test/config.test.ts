import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { ConfigError, loadConfig, poolSizePerWorker } from '../src/config.js'
import { ensureBuilt } from './cluster-harness.js'

test('defaults are usable for local development', () => {
  const c = loadConfig({})
  assert.equal(c.port, 3000)
  assert.equal(c.host, '0.0.0.0')
  assert.equal(c.databaseUrl, 'postgres://postgres@127.0.0.1:5432/postgres')
  assert.equal(c.redisUrl, 'redis://127.0.0.1:6379')
  assert.equal(c.jwtSecret, undefined)
  assert.equal(c.pgPoolTotal, 80)
  assert.ok(c.workers >= 1)
})

test('values are coerced from strings and empty strings count as unset', () => {
  const c = loadConfig({ PORT: '8080', WORKER_COUNT: '2', RATE_LIMIT_MAX: '7', HOST: '' })
  assert.equal(c.port, 8080)
  assert.equal(c.workers, 2)
  assert.equal(c.rateLimitMax, 7)
  assert.equal(c.host, '0.0.0.0')
})

test('every bad variable is named in one message', () => {
  assert.throws(() => loadConfig({ PORT: 'abc', WORKER_COUNT: '0', DATABASE_URL: 'mysql://x', JWT_SECRET: 'short' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.deepEqual([...err.variables].sort(), ['DATABASE_URL', 'JWT_SECRET', 'PORT', 'WORKER_COUNT'])
    assert.match(err.message, /PORT must be integer \(got "abc"\)/)
    assert.match(err.message, /WORKER_COUNT must be >= 1/)
    assert.doesNotMatch(err.message, /short|mysql/, 'secrets and URLs are not echoed')
    return true
  })
})

test('production refuses to start without JWT_SECRET and without explicit service URLs', () => {
  assert.throws(() => loadConfig({ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r' }), /JWT_SECRET is required when NODE_ENV=production/)
  assert.throws(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.deepEqual([...err.variables].sort(), ['DATABASE_URL', 'REDIS_URL'])
    return true
  })
  const c = loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32), DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r' })
  assert.equal(c.jwtSecret, 'x'.repeat(32))
})

test('DRAIN_DELAY must leave time to drain within SHUTDOWN_TIMEOUT', () => {
  assert.equal(loadConfig({}).drainDelay, 0)
  assert.equal(loadConfig({ DRAIN_DELAY: '5000' }).drainDelay, 5000)
  assert.throws(() => loadConfig({ DRAIN_DELAY: '5000', SHUTDOWN_TIMEOUT: '8000' }), /DRAIN_DELAY must be less than half of SHUTDOWN_TIMEOUT/)
})

test('METRICS_PORT takes a port or "off"', () => {
  assert.equal(loadConfig({}).metricsPort, 9091)
  assert.equal(loadConfig({ METRICS_PORT: '0' }).metricsPort, 0)
  assert.equal(loadConfig({ METRICS_PORT: 'off' }).metricsPort, null)
  assert.throws(() => loadConfig({ METRICS_PORT: 'on' }), /METRICS_PORT/)
  assert.throws(() => loadConfig({ METRICS_PORT: '70000' }), /METRICS_PORT must be a port/)
})

test('pool size: a share of the budget, at most 5 and at least 1 per worker', () => {
  assert.equal(poolSizePerWorker(80, 1), 5)
  assert.equal(poolSizePerWorker(80, 2), 5)
  assert.equal(poolSizePerWorker(80, 16), 5)
  assert.equal(poolSizePerWorker(80, 32), 2)
  assert.equal(poolSizePerWorker(80, 200), 1)
  assert.equal(poolSizePerWorker(10, 4), 2)
  for (let w = 1; w <= 64; w++) assert.ok(w * poolSizePerWorker(80, w) <= 80, `${w} workers stay within the budget`)
})

test('the server refuses to start on a bad env, naming each bad variable, before forking anything', () => {
  ensureBuilt()
  const server = new URL('../dist/server.js', import.meta.url).pathname
  const run = (env: Record<string, string>): { status: number | null, stderr: string } => {
    const r = spawnSync(process.execPath, [server], { env: { PATH: process.env['PATH'] ?? '', ...env }, encoding: 'utf8', timeout: 30000 })
    return { status: r.status, stderr: r.stderr }
  }
  const prod = run({ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r' })
  assert.equal(prod.status, 1)
  assert.match(prod.stderr, /JWT_SECRET is required when NODE_ENV=production/)
  const bad = run({ PORT: 'http', RATE_LIMIT_MAX: '-1' })
  assert.equal(bad.status, 1)
  assert.match(bad.stderr, /PORT must be integer \(got "http"\)/)
  assert.match(bad.stderr, /RATE_LIMIT_MAX must be >= 1/)
  // Postgres unreachable at start: the preflight's migrations fail, nothing is forked, exit 1.
  const noDb = spawnSync(process.execPath, [server], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', WORKER_COUNT: '2', LOG_LEVEL: 'info' },
    encoding: 'utf8',
    timeout: 30000
  })
  assert.equal(noDb.status, 1)
  assert.match(noDb.stdout, /migrations failed: is Postgres reachable at DATABASE_URL\?/)
  assert.doesNotMatch(noDb.stdout, /worker forked/)
})
