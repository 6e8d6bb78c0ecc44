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
  [{ delay: 30_000 }, 'delay', /below timeout \(25000\)/],
  [{ timeout: 1000, linger: 1000 }, 'linger', /below timeout \(1000\)/],
  [{ readiness: true }, 'readiness', /"\/ready"/],
  [{ readiness: { path: 'ready' } }, 'readiness', /starting with "\/"/],
  [{ retryAfter: -2 }, 'retryAfter', /-2/],
  [{ logger: {} }, 'logger', /info, warn and error/],
  [{ timout: 1000 }, 'timout', /unknown; allowed: timeout, delay/],
  ['fast', '(options)', /expected an object/]
]

for (const [options, name, detail] of bad) {
  test(`invalid option ${JSON.stringify(options)} fails at register time naming "${name}"`, async () => {
    const app = Fastify()
    await assert.rejects(async () => { await app.register(clusterDrain, options as DrainOptions).ready() }, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'NCLUST_DRAIN_INVALID_OPTION')
      assert.ok(err.message.includes(`"${name}"`), err.message)
      assert.match(err.message, detail)
      return true
    })
    await app.close()
  })
}

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
