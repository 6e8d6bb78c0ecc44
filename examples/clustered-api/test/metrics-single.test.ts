// Single-process mode (WORKER_COUNT=1): the built server serves its metrics on METRICS_PORT, never on
// the public app port. (Several workers: cluster.test.ts checks the app port has no /metrics and the
// primary serves the scrape.)
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { DATABASE_URL, REDIS_URL, TEST_SECRET, deleteKeys, dropSchema, isolation } from './helpers.js'
import { freePort, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { ensureBuilt, request } from './cluster-harness.js'
import { SCRAPE_SERVER_LIMITS } from '@nclust/fastify-pidmetrics'
import { assertServerLimits } from '../../../test/helpers/server-limits.ts'

const { schema, prefix } = isolation('msingle')
let proc: Spawned | undefined

after(async () => {
  await proc?.cleanup()
  await dropSchema(schema)
  await deleteKeys(prefix)
})

test('single-process mode: /metrics on METRICS_HOST:METRICS_PORT (loopback), 404 on the app port', async (t) => {
  ensureBuilt()
  const port = await freePort()
  const metricsPort = await freePort()
  proc = spawnNode(join(new URL('..', import.meta.url).pathname, 'dist', 'server.js'), {
    env: {
      HOST: '127.0.0.1',
      PORT: String(port),
      WORKER_COUNT: '1',
      METRICS_PORT: String(metricsPort),
      DATABASE_URL,
      REDIS_URL,
      JWT_SECRET: TEST_SECRET,
      PG_SCHEMA: schema,
      REDIS_PREFIX: prefix
    }
  })
  const running = proc
  await waitFor(async () => (await request(port, 'GET', '/health')).status === 200, 'the single process answering /health', 60000, 250)
  const listening = await running.waitForLine((l) => l.msg === 'metrics listening (single-process mode)', 20000, 'the metrics server')
  assert.equal(listening['url'], `http://127.0.0.1:${metricsPort}/metrics`, 'loopback by default (METRICS_HOST)')

  const onApp = await request(port, 'GET', '/metrics')
  assert.equal(onApp.status, 404, 'not on the public port')
  assert.equal(onApp.pid, running.pid, 'the process itself serves (no fork)')

  const scrape = await request<string>(metricsPort, 'GET', '/metrics')
  assert.equal(scrape.status, 200)
  assert.match(String(scrape.headers['content-type']), /^text\/plain/)
  assert.match(scrape.body, /http_requests_total\{[^}]*route="\/health"/)
  assert.match(scrape.body, new RegExp(`pid="${running.pid}"`))
  assert.match(scrape.body, /worker="0"/)

  // The same limits as the primary's scrape server: a connection cap, slow headers cut.
  const { slowClosedAfterMs } = await assertServerLimits(metricsPort, '/metrics', SCRAPE_SERVER_LIMITS)
  t.diagnostic(`slow headers closed after ${slowClosedAfterMs} ms`)

  running.child.kill('SIGTERM')
  assert.equal((await running.waitForExit(30000)).code, 0)
  // The metrics server closed with the app: the port is free again.
  await assert.rejects(request(metricsPort, 'GET', '/metrics'), /ECONNREFUSED/)
})
