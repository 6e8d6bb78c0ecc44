// The app as a module: both shapes load, server options come from the `options` export, and a
// module of neither shape fails with a coded error naming what was expected.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { loadAppModule, resolveAppModule } from '../src/app-module.ts'
import type { WorkerContext } from '../src/types.ts'

const fixture = (name: string): URL => new URL(`./fixtures/${name}`, import.meta.url)
const ctx: WorkerContext = { workerId: 0, workers: 1, generation: 0, single: true, logger: pino({ level: 'silent' }) }

test('a fastify-cli app (CommonJS, autoload of plugins/ and routes/) loads as a plugin: routes and decorators on the root', async (t) => {
  const app = await (await loadAppModule(fixture('cli-app/app.js')))(ctx)
  t.after(() => app.close())
  const root = await app.inject('/')
  assert.equal(root.statusCode, 200)
  assert.deepEqual(root.json(), { root: true, pid: process.pid, support: 'hugs' })
  assert.equal((await app.inject('/example')).body, 'this is an example')
  assert.equal(app.hasDecorator('someSupport'), true, 'fastify-plugin decorators reach the root, as under fastify start')
})

test('an ESM plugin module: its `options` export becomes the server options', async (t) => {
  const app = await (await loadAppModule(fixture('build-app/plugin-options.mjs')))(ctx)
  t.after(() => app.close())
  assert.deepEqual((await app.inject('/')).json(), { bodyLimit: 4321, opts: {} })
})

test('tsc-compiled CommonJS (exports.default) is found under the extra default', async (t) => {
  const app = await (await loadAppModule(fixture('build-app/ts-default.cjs')))(ctx)
  t.after(() => app.close())
  assert.deepEqual((await app.inject('/')).json(), { ts: true, bodyLimit: 999 })
})

test('a module exporting buildApp: buildApp is used (and its options export is not)', async (t) => {
  const app = await (await loadAppModule(fixture('build-app/app.mjs')))(ctx)
  t.after(() => app.close())
  const body = (await app.inject('/')).json()
  assert.equal(body.workerId, 0)
  assert.equal(body.bodyLimit, 1048576)
})

test('a module of neither shape: NCLUST_CLUSTER_INVALID_APP naming the module and both shapes', async () => {
  await assert.rejects(loadAppModule(fixture('build-app/not-an-app.mjs')), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_CLUSTER_INVALID_APP')
    assert.match(err.message, /not-an-app\.mjs exports neither a Fastify plugin .* nor buildApp/)
    return true
  })
})

test('resolveAppModule: relative to the working directory, file: URLs as they are, a missing file named', () => {
  const url = resolveAppModule('test/fixtures/cli-app/app.js', new URL('..', import.meta.url).pathname)
  assert.equal(url.href, fixture('cli-app/app.js').href)
  assert.equal(resolveAppModule(fixture('build-app/app.mjs')).href, fixture('build-app/app.mjs').href)
  assert.throws(() => resolveAppModule('./nope.js', '/tmp'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'NCLUST_CLUSTER_INVALID_APP')
    assert.equal(err.message, 'app module ./nope.js not found (looked for /tmp/nope.js)')
    return true
  })
})
