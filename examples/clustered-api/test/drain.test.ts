// /health must turn 503 as soon as the worker starts draining, so a load balancer stops routing to
// it while in-flight requests finish. startClustered registers @nclust/fastify-drain in each worker;
// here the same plugin is registered by hand on the in-process app, with a delay so the listener
// keeps answering during the first part of the drain.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { clusterDrain } from '@nclust/fastify-drain'
import { buildApp } from '../src/app.js'
import { deleteKeys, isolation, testConfig } from './helpers.js'
import { request } from './cluster-harness.js'

const { schema, prefix } = isolation('drain')

after(async () => {
  await deleteKeys(prefix)
})

test('health answers 503 "draining" once the drain has started (drainAndClose, as the cluster worker closes)', async () => {
  const config = testConfig({ schema, prefix })
  const app = await buildApp({ workerId: 0, workers: 1 }, config)
  await app.register(clusterDrain, { delay: 1500, timeout: 5000 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo

  const before = await request<{ status: string }>(port, 'GET', '/health')
  assert.equal(before.status, 200)
  assert.equal(before.body.status, 'ok')

  const closing = app.drainAndClose()
  try {
    const during = await request<{ status: string, checks: { postgres: { ok: boolean } } }>(port, 'GET', '/health')
    assert.equal(during.status, 503)
    assert.equal(during.body.status, 'draining')
    assert.equal(during.body.checks.postgres.ok, true, 'the dependencies are fine: 503 is only because of the drain')
  } finally {
    await closing
  }
})
