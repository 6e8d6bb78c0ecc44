import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import clusterDrain, { clusterDrain as named, type DrainOptions } from '../src/index.js'
import { makeApp } from './helpers.js'

const bad: Array<[unknown, string, RegExp]> = [
  [{ timeout: 'soon' }, 'timeout', /"soon"/],
  [{ timeout: 0 }, 'timeout', /0/],
  [{ timeout: 1.5 }, 'timeout', /1\.5/],
  [{ delay: -1 }, 'delay', /-1/],
  [{ delay: 30_000 }, 'delay', /^option delay must be below timeout \(25000\), or nothing would be left to drain in, got 30000$/],
  [{ timeout: 1000, linger: 1000 }, 'linger', /below timeout \(1000\)/],
  [{ readiness: true }, 'readiness', /"\/ready"/],
  [{ readiness: { path: 'ready' } }, 'readiness', /starting with "\/"/],
  [{ retryAfter: -2 }, 'retryAfter', /-2/],
  [{ logger: {} }, 'logger', /info, warn and error/],
  ['fast', 'options', /^options must be an object or nothing, got "fast"$/]
]

for (const [options, name, detail] of bad) {
  test(`invalid option ${JSON.stringify(options)} fails at register time naming "${name}"`, async () => {
    const app = Fastify()
    await assert.rejects(async () => { await app.register(clusterDrain, options as DrainOptions).ready() }, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NCLUST_DRAIN_INVALID_OPTION')
      assert.ok(err.message.startsWith(name === 'options' ? 'options must be ' : `option ${name} must be `), err.message)
      assert.match(err.message, detail)
      return true
    })
    await app.close()
  })
}

test('an unknown key fails with NCLUST_DRAIN_UNKNOWN_OPTION naming it and the known ones', async () => {
  const app = Fastify()
  await assert.rejects(async () => { await app.register(clusterDrain, { timout: 1000 } as DrainOptions).ready() }, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_DRAIN_UNKNOWN_OPTION')
    assert.match(err.message, /^unknown option timout, expected one of timeout, delay, linger/)
    return true
  })
  await app.close()
})

test('minDrainTimeout is the rule the checks apply: the smallest timeout accepted with a delay and a linger', async () => {
  const { minDrainTimeout } = await import('../src/defaults.js')
  const { resolveOptions } = await import('../src/options.js')
  for (const o of [{}, { linger: 0 }, { delay: 5000 }, { delay: 10, linger: 900 }]) {
    const min = minDrainTimeout(o)
    assert.equal(resolveOptions({ ...o, timeout: min }).timeout, min, `${JSON.stringify(o)} fits in ${min}`)
    if (min > 1) assert.throws(() => resolveOptions({ ...o, timeout: min - 1 }), /must be below timeout/)
  }
  assert.equal(minDrainTimeout(), 251)
})

test('registers on a default Fastify() (no server option needed) and decorates drainAndClose', async () => {
  const app = Fastify()
  await app.register(clusterDrain).ready()
  assert.equal(typeof app.drainAndClose, 'function')
  assert.equal(app.drain.phase, 'serving')
  await app.close()
})

test('registered once per app, default and named exports are the same plugin', async () => {
  assert.equal(named, clusterDrain)
  const app = Fastify()
  app.register(clusterDrain)
  app.register(named)
  await assert.rejects(async () => { await app.ready() }, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_DRAIN_SERVER_OPTION')
    assert.match(err.message, /registered twice/)
    return true
  })
  await app.close()
})

test('defaults and decorators', async (t) => {
  const { app } = await makeApp({}, (app) => {
    app.get('/signal', async (request) => ({ aborted: request.drainSignal.aborted, same: request.drainSignal === app.drain.signal }))
  })
  t.after(() => app.close())
  await app.ready()
  assert.deepEqual(
    { draining: app.drain.draining, phase: app.drain.phase, inFlight: app.drain.inFlight, rejected: app.drain.rejected, destroyed: app.drain.destroyed, idleClosed: app.drain.idleClosed },
    { draining: false, phase: 'serving', inFlight: 0, rejected: 0, destroyed: 0, idleClosed: 0 }
  )
  assert.ok(app.drain.signal instanceof AbortSignal)
  assert.deepEqual((await app.inject('/signal')).json(), { aborted: false, same: true })
})

test('a custom logger receives the drain lines', async () => {
  const lines: string[] = []
  const logger = {
    info: (_o: unknown, msg: string) => lines.push(`info ${msg}`),
    warn: (_o: unknown, msg: string) => lines.push(`warn ${msg}`),
    error: (_o: unknown, msg: string) => lines.push(`error ${msg}`)
  }
  const app = Fastify()
  await app.register(clusterDrain, { logger: logger as unknown as DrainOptions['logger'] })
  await app.ready()
  await app.close()
  assert.deepEqual(lines, ['info drain: started', 'info drain: done'])
})

test('the README table and the DrainOptions JSDoc give the defaults DRAIN_DEFAULTS holds (no copy drifts)', async () => {
  const { readFileSync } = await import('node:fs')
  const { DRAIN_DEFAULTS } = await import('../src/defaults.js')
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const types = readFileSync(new URL('../src/types.ts', import.meta.url), 'utf8')
  for (const [name, value] of Object.entries(DRAIN_DEFAULTS)) {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${name}\` |`))
    assert.ok(row?.split(' | ')[2] === `\`${value}\``, `README default of ${name}: ${row ?? 'no row'}`)
    const doc = new RegExp(`Default ${value}\\.[^/]*\\*/\\s*${name}\\?:`)
    assert.match(types, doc, `DrainOptions.${name} JSDoc says Default ${value}`)
  }
})
