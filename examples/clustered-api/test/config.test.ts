import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { ConfigError, loadConfig, parseTrustProxy, poolSizePerWorker } from '../src/config.js'
import { ensureBuilt } from './cluster-harness.js'

const required = { DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r', JWT_SECRET: 'x'.repeat(32) }

test('defaults fill everything but the secret and the service URLs', () => {
  const c = loadConfig(required)
  assert.equal(c.port, 3000)
  assert.equal(c.host, '0.0.0.0')
  assert.equal(c.databaseUrl, 'postgres://db/app')
  assert.equal(c.redisUrl, 'redis://r')
  assert.equal(c.jwtSecret, 'x'.repeat(32))
  assert.equal(c.pgPoolTotal, 80)
  assert.ok(c.workers >= 1)
  assert.deepEqual({ hashConcurrency: c.hashConcurrency, hashQueue: c.hashQueue, healthCacheTtl: c.healthCacheTtl, cartMaxItems: c.cartMaxItems, trustProxy: c.trustProxy },
    { hashConcurrency: 2, hashQueue: 16, healthCacheTtl: 1000, cartMaxItems: 100, trustProxy: false })
})

test('values are coerced from strings and empty strings count as unset', () => {
  const c = loadConfig({ ...required, PORT: '8080', WORKER_COUNT: '2', RATE_LIMIT_MAX: '7', HOST: '' })
  assert.equal(c.port, 8080)
  assert.equal(c.workers, 2)
  assert.equal(c.rateLimitMax, 7)
  assert.equal(c.host, '0.0.0.0')
})

test('every bad variable is named in one message', () => {
  assert.throws(() => loadConfig({ PORT: 'abc', WORKER_COUNT: '0', DATABASE_URL: 'mysql://x', JWT_SECRET: 'short', REDIS_URL: 'redis://r' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError)
    assert.deepEqual([...err.variables].sort(), ['DATABASE_URL', 'JWT_SECRET', 'PORT', 'WORKER_COUNT'])
    assert.match(err.message, /PORT must be integer \(got "abc"\)/)
    assert.match(err.message, /WORKER_COUNT must be >= 1/)
    assert.doesNotMatch(err.message, /short|mysql/, 'secrets and URLs are not echoed')
    return true
  })
})

test('JWT_SECRET, DATABASE_URL and REDIS_URL are required whatever NODE_ENV says (no dev secret, no dev URLs)', () => {
  for (const NODE_ENV of [undefined, 'development', 'test', 'production']) {
    assert.throws(() => loadConfig({ NODE_ENV }), (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.deepEqual([...err.variables].sort(), ['DATABASE_URL', 'JWT_SECRET', 'REDIS_URL'], `NODE_ENV=${String(NODE_ENV)}`)
      assert.match(err.message, /JWT_SECRET is required \(at least 32 characters/)
      return true
    })
    assert.throws(() => loadConfig({ NODE_ENV, DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r' }), /^ConfigError: Invalid environment: JWT_SECRET is required/)
    assert.equal(loadConfig({ NODE_ENV, ...required }).jwtSecret, 'x'.repeat(32))
  }
})

test('DRAIN_DELAY must leave time to drain within SHUTDOWN_TIMEOUT', () => {
  assert.equal(loadConfig(required).drainDelay, 0)
  assert.equal(loadConfig({ ...required, DRAIN_DELAY: '5000' }).drainDelay, 5000)
  assert.throws(() => loadConfig({ ...required, DRAIN_DELAY: '5000', SHUTDOWN_TIMEOUT: '8000' }), /DRAIN_DELAY must be less than half of SHUTDOWN_TIMEOUT/)
})

test('slow clients: REQUEST_TIMEOUT and CONNECTION_TIMEOUT default on, and a request cannot outlast the drain', () => {
  const c = loadConfig(required)
  assert.equal(c.requestTimeout, 10000)
  assert.equal(c.connectionTimeout, 30000)
  assert.equal(loadConfig({ ...required, REQUEST_TIMEOUT: '2000', CONNECTION_TIMEOUT: '5000' }).requestTimeout, 2000)
  assert.equal(loadConfig({ ...required, SHUTDOWN_TIMEOUT: '10000' }).requestTimeout, 5000, 'the default stays under a short SHUTDOWN_TIMEOUT')
  assert.throws(() => loadConfig({ ...required, REQUEST_TIMEOUT: '0' }), /REQUEST_TIMEOUT must be >= 1000 \(got "0"\)/)
  assert.throws(() => loadConfig({ ...required, REQUEST_TIMEOUT: '30000', SHUTDOWN_TIMEOUT: '30000' }), /REQUEST_TIMEOUT must be less than SHUTDOWN_TIMEOUT \(30000\)/)
})

test('TRUST_PROXY: off by default, a hop count or addresses/CIDRs, never a blanket true', () => {
  assert.equal(loadConfig(required).trustProxy, false)
  for (const off of ['', 'off', 'false', '0']) assert.equal(parseTrustProxy(off), false)
  assert.equal(parseTrustProxy('1'), 1)
  assert.deepEqual(parseTrustProxy('10.0.0.0/8, 127.0.0.1,::1/128,loopback'), ['10.0.0.0/8', '127.0.0.1', '::1/128', 'loopback'])
  assert.throws(() => loadConfig({ ...required, TRUST_PROXY: 'true' }), /TRUST_PROXY must not be "true": that trusts any X-Forwarded-For a client sends/)
  assert.throws(() => loadConfig({ ...required, TRUST_PROXY: '10.0.0.0/33,proxy.local' }), /TRUST_PROXY must be off, a hop count, or comma-separated IP addresses\/CIDRs \(bad: "10.0.0.0\/33", "proxy.local"\)/)
  assert.throws(() => loadConfig({ ...required, TRUST_PROXY: '99' }), /TRUST_PROXY must be a hop count from 1 to 16/)
})

test('METRICS_PORT takes a port or "off"', () => {
  assert.equal(loadConfig(required).metricsPort, 9091)
  assert.equal(loadConfig({ ...required, METRICS_PORT: '0' }).metricsPort, 0)
  assert.equal(loadConfig({ ...required, METRICS_PORT: 'off' }).metricsPort, null)
  assert.throws(() => loadConfig({ ...required, METRICS_PORT: 'on' }), /METRICS_PORT/)
  assert.throws(() => loadConfig({ ...required, METRICS_PORT: '70000' }), /METRICS_PORT must be a port/)
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
  const run = (env: Record<string, string>): { status: number | null, stdout: string, stderr: string } => {
    const r = spawnSync(process.execPath, [server], { env: { PATH: process.env['PATH'] ?? '', ...env }, encoding: 'utf8', timeout: 30000 })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  // No NODE_ENV at all (what a forgetful deploy has): still no generated secret, exit 1 naming it.
  const noSecret = run({ DATABASE_URL: 'postgres://db/app', REDIS_URL: 'redis://r' })
  assert.equal(noSecret.status, 1)
  assert.match(noSecret.stderr, /^Invalid environment: JWT_SECRET is required/m)
  assert.doesNotMatch(noSecret.stdout, /generated a random|worker forked/)
  const bad = run({ ...required, PORT: 'http', RATE_LIMIT_MAX: '-1' })
  assert.equal(bad.status, 1)
  assert.match(bad.stderr, /PORT must be integer \(got "http"\)/)
  assert.match(bad.stderr, /RATE_LIMIT_MAX must be >= 1/)
  // Postgres unreachable at start: the preflight's migrations fail, nothing is forked, exit 1.
  const noDb = spawnSync(process.execPath, [server], {
    env: { PATH: process.env['PATH'] ?? '', ...required, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', WORKER_COUNT: '2', LOG_LEVEL: 'info' },
    encoding: 'utf8',
    timeout: 30000
  })
  assert.equal(noDb.status, 1)
  assert.match(noDb.stdout, /migrations failed: is Postgres reachable at DATABASE_URL\?/)
  assert.doesNotMatch(noDb.stdout, /worker forked/)
})
