// The README: a worker that cannot reach Redis at start fails clearly after REDIS_START_TIMEOUT, and
// the supervisor restarts it with backoff until Redis is back. Redis is reached through a TCP proxy
// that is down when the cluster starts; the shared Redis is never touched.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { clusterEnv, deleteKeys, dropSchema, isolation, REDIS_URL } from './helpers.js'
import { freePort, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { ensureBuilt, request } from './cluster-harness.js'
import { TcpProxy } from './proxy.js'

const { schema, prefix } = isolation('redisstart')
const redisProxy = TcpProxy.forUrl(REDIS_URL)
const serverJs = join(new URL('..', import.meta.url).pathname, 'dist', 'server.js')

before(async () => { await redisProxy.start() })

after(async () => {
  await redisProxy.close()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

/** The built cluster entry, with Redis behind the (cut) proxy. */
function startWithoutRedis (port: number, extra: Record<string, string>): ReturnType<typeof spawnNode> {
  return spawnNode(serverJs, {
    env: {
      HOST: '127.0.0.1',
      PORT: String(port),
      ...clusterEnv({ schema, prefix }, { REDIS_URL: redisProxy.rewrite(REDIS_URL), REDIS_START_TIMEOUT: '1000', SHUTDOWN_TIMEOUT: '10000', ...extra })
    }
  })
}

const redisError = /Redis is not reachable at .* after 1000 ms: a worker needs it to start \(REDIS_URL\)/

test('START_RETRIES=30: workers started without Redis fail clearly and are retried with backoff until Redis returns; then both serve', async (t) => {
  ensureBuilt()
  await redisProxy.cut() // Redis is away before anything starts
  const port = await freePort()
  const p = startWithoutRedis(port, { START_RETRIES: '30' })
  t.after(() => p.cleanup())
  const failedStarts = (): Array<Record<string, unknown>> => p.lines.filter((l) => typeof l.msg === 'string' && /^worker \d did not start \(try \d+ of 31, start-failed\)/.test(l.msg))
  await waitFor(() => failedStarts().length >= 3, 'three failed starts', 90_000, 100)
  assert.match(String(failedStarts()[0]?.error), redisError)
  await redisProxy.restore()
  await waitFor(async () => {
    const seen = new Map<number, number>()
    for (let i = 0; i < 12 && seen.size < 2; i++) {
      const r = await request(port, 'GET', '/health')
      if (Number.isInteger(r.pid)) seen.set(r.pid, r.status)
    }
    return seen.size === 2 && [...seen.values()].every((s) => s === 200)
  }, 'both workers healthy once Redis is back', 90_000, 250)
  assert.equal(p.lines.filter((l) => typeof l.msg === 'string' && /could not start|crash loop/.test(l.msg)).length, 0, 'no verdict, no crash loop')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit()).code, 0)
})

test('default START_RETRIES: Redis away at start stops the cluster with exit 1 within seconds, the error and its stack printed once', async (t) => {
  ensureBuilt()
  await redisProxy.cut()
  const port = await freePort()
  const started = Date.now()
  const p = startWithoutRedis(port, {})
  t.after(() => p.cleanup())
  const { code } = await p.waitForExit(60_000)
  const ms = Date.now() - started
  assert.equal(code, 1)
  const verdicts = p.lines.filter((l) => typeof l.msg === 'string' && /^worker \d could not start \(3 tries, start-failed\)/.test(l.msg))
  assert.equal(verdicts.length, 1, 'one verdict')
  assert.match(String(verdicts[0]?.msg), redisError)
  assert.equal(p.output().split('"stack":"Error: Redis is not reachable').length - 1, 1, 'the stack printed once, by the primary\'s verdict')
  t.diagnostic(`exit 1 after ${ms} ms (3 tries of REDIS_START_TIMEOUT 1000 ms each, plus start-up)`)
})
