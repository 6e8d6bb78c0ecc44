// The dev launcher (`pnpm start` = `node dist/dev.js`) as a real process in each of its situations:
// URLs given; URLs unset while the local services answer; nothing answering (probe targets pointed at
// closed ports), where an embedded Postgres and a redis-server from PATH start, survive a kill -9 of
// the launcher and are cleaned up and reused by the next start. Each run answers /health from two
// workers, and on SIGTERM exits 0 leaving no process behind: every descendant seen while it ran
// (cluster primary, workers, postmaster and its backends, redis-server) is checked.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { DATABASE_URL, REDIS_URL, deleteKeys, dropSchema, isolation } from './helpers.js'
import { ensureBuilt, request } from './cluster-harness.js'
import { freePort, isAlive, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'

const exampleDir = new URL('..', import.meta.url).pathname
const devJs = join(exampleDir, 'dist', 'dev.js')
// Kept between runs: the embedded Postgres' initdb is paid once per machine, not per run.
// In the temp folder, not the repository (so nothing to git-ignore): as root the Postgres binaries run as an unprivileged user,
// who may not reach a clone under /root.
const cachedDir = join(tmpdir(), 'nclust-dev-launcher-test')

/** A fresh temporary folder for one launch, removed when the file's tests end. */
const temporary: string[] = []
function tempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temporary.push(dir)
  return dir
}
after(() => { for (const dir of temporary) { try { rmSync(dir, { recursive: true, force: true }) } catch {} } })

/** Every descendant of `pid`, from /proc (children of children included). */
function descendants (pid: number): number[] {
  const parent = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {}
  }
  const out: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const p = queue.shift() as number
    for (const [child, ppid] of parent) if (ppid === p) { out.push(child); queue.push(child) }
  }
  return out
}

const text = (proc: Spawned): string => proc.output()

interface Launched { proc: Spawned, port: number, workers: number[], seen: Set<number> }

async function launch (env: Record<string, string | undefined>): Promise<Launched> {
  ensureBuilt()
  const port = await freePort()
  const proc = spawnNode(devJs, {
    env: { HOST: '127.0.0.1', PORT: String(port), METRICS_PORT: String(await freePort()), WORKER_COUNT: '2', LOG_LEVEL: 'warn', SHUTDOWN_TIMEOUT: '10000', ...env }
  })
  await proc.waitForLine((l) => /^stop: Ctrl-C/.test(String(l.msg)), 120000, 'the end of the launcher\'s ready summary')
  const line = proc.lines.find((l) => /^workers: 2 \(pids /.test(String(l.msg))) ?? {}
  const workers = (/pids (\d+), (\d+)/.exec(String(line.msg)) ?? []).slice(1).map(Number)
  const seen = new Set([proc.pid, ...descendants(proc.pid)])
  proc.track(...seen)
  return { proc, port, workers, seen }
}

/** /health 200 from both printed workers, each on a new connection. */
async function assertTwoWorkersHealthy (l: Launched): Promise<void> {
  const ok = new Set<number>()
  for (let i = 0; i < 40 && ok.size < 2; i++) {
    const r = await request(l.port, 'GET', '/health')
    if (r.status === 200) ok.add(r.pid)
  }
  assert.deepEqual([...ok].sort(), [...l.workers].sort(), 'the two workers the launcher printed answered /health 200')
}

/** SIGTERM: exit 0, and not one of the processes seen while it ran is left. */
async function assertCleanStop (l: Launched, also: number[] = []): Promise<void> {
  for (const p of descendants(l.proc.pid)) l.seen.add(p) // postgres backends started since
  l.proc.child.kill('SIGTERM')
  const { code } = await l.proc.waitForExit(60000)
  assert.equal(code, 0, `exit 0 on SIGTERM; output:\n${text(l.proc).slice(-3000)}`)
  assert.match(text(l.proc), /stopping: cluster exited 0/)
  const all = [...l.seen, ...also]
  await waitFor(() => all.every((p) => !isAlive(p)), `no process left of ${all.join(', ')}`, 5000)
}

test('bad env: one line naming the variable, exit 1, nothing started', async () => {
  ensureBuilt()
  for (const [env, name] of [[{ WORKER_COUNT: 'abc' }, 'WORKER_COUNT'], [{ DATABASE_URL: 'postgres://u:secret@db:notaport/x' }, 'DATABASE_URL']] as const) {
    const proc = spawnNode(devJs, { env: { ...env, NCLUST_DEV_DIR: tempDir('nclust-dev-') } })
    try {
      const { code } = await proc.waitForExit(30000)
      assert.equal(code, 1)
      const lines = text(proc).trim().split('\n')
      assert.equal(lines.length, 1, `one line, got:\n${text(proc)}`)
      assert.match(lines[0] ?? '', new RegExp(`^Invalid environment: ${name} `))
      assert.doesNotMatch(text(proc), /secret/, 'no credentials echoed')
    } finally { await proc.cleanup() }
  }
})

test('nothing answers and no redis-server on PATH: one clear message, exit 1, no stack', async () => {
  ensureBuilt()
  const proc = spawnNode(devJs, {
    env: {
      PATH: tempDir('nclust-empty-path-'), // nothing on it: the launcher runs the cluster with process.execPath
      DATABASE_URL: undefined,
      REDIS_URL: undefined,
      NCLUST_DEV_PG_PORT: String(await freePort()),
      NCLUST_DEV_REDIS_PORT: String(await freePort()),
      NCLUST_DEV_DIR: tempDir('nclust-dev-')
    }
  })
  try {
    const { code } = await proc.waitForExit(30000)
    assert.equal(code, 1)
    const out = text(proc)
    const message = out.split('\n').filter((l) => l.startsWith('redis:'))
    assert.equal(message.length, 1, out)
    assert.match(message[0] ?? '', /no redis-server on PATH.*apt-get install redis-server.*brew install redis.*docker run/)
    assert.doesNotMatch(out, /^\s+at /m, 'no stack trace')
    assert.doesNotMatch(out, /postgres: starting/, 'checked before starting Postgres')
  } finally { await proc.cleanup() }
})

test('URLs given: uses them, starts nothing', async () => {
  const { schema, prefix } = isolation('devgiven')
  let l: Launched | undefined
  try {
    l = await launch({ DATABASE_URL, REDIS_URL, PG_SCHEMA: schema, REDIS_PREFIX: prefix, NCLUST_DEV_DIR: tempDir('nclust-dev-') })
    assert.match(text(l.proc), /^postgres: using DATABASE_URL \(127\.0\.0\.1:5432\/test\): it answers$/m)
    assert.match(text(l.proc), /^redis: using REDIS_URL \(127\.0\.0\.1:6379\): it answers$/m)
    assert.doesNotMatch(text(l.proc), /starting \(/)
    assert.match(text(l.proc), /^metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/m)
    await assertTwoWorkersHealthy(l)
    await assertCleanStop(l)
  } finally {
    await l?.proc.cleanup()
    await dropSchema(schema)
    await deleteKeys(prefix)
  }
})

test('URLs unset, local servers answer: uses them and says so', async () => {
  const { schema, prefix } = isolation('devlocal')
  const localPg = 'postgres://postgres@127.0.0.1:5432/postgres'
  let l: Launched | undefined
  try {
    l = await launch({
      DATABASE_URL: undefined,
      REDIS_URL: undefined,
      NCLUST_DEV_PG_PORT: '5432',
      NCLUST_DEV_REDIS_PORT: '6379',
      PG_SCHEMA: schema,
      REDIS_PREFIX: prefix,
      NCLUST_DEV_DIR: tempDir('nclust-dev-')
    })
    assert.match(text(l.proc), /^postgres: DATABASE_URL not set; a server answers on 127\.0\.0\.1:5432: using postgres:\/\/postgres@127\.0\.0\.1:5432\/postgres$/m)
    assert.match(text(l.proc), /^redis: REDIS_URL not set; a server answers on 127\.0\.0\.1:6379/m)
    assert.doesNotMatch(text(l.proc), /starting \(/)
    await assertTwoWorkersHealthy(l)
    await assertCleanStop(l)
  } finally {
    await l?.proc.cleanup()
    const c = new pg.Client({ connectionString: localPg })
    await c.connect()
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).finally(async () => await c.end())
    await deleteKeys(prefix)
  }
})

test('nothing answers: embedded Postgres and redis-server start; after a kill -9 the next start cleans up and reuses the data', async () => {
  const env = {
    DATABASE_URL: undefined,
    REDIS_URL: undefined,
    NCLUST_DEV_PG_PORT: String(await freePort()),
    NCLUST_DEV_REDIS_PORT: String(await freePort()),
    NCLUST_DEV_DIR: cachedDir
  }
  const user = { username: `dev_${process.pid}_${Date.now() % 100000}`, password: 'correct horse battery' }
  let a: Launched | undefined
  let b: Launched | undefined
  try {
    a = await launch(env)
    const outA = text(a.proc)
    assert.match(outA, /^postgres: DATABASE_URL not set and on 127\.0\.0\.1:\d+ nothing answers: an embedded Postgres will start$/m)
    assert.match(outA, /^postgres: starting \(embedded, .*dev-launcher-test\/pg, 127\.0\.0\.1:\d+\)\.\.\. ready in [\d.]+ s \(pid \d+\)$/m)
    assert.match(outA, /^redis: starting \(.*redis-server, .*dev-launcher-test\/redis, 127\.0\.0\.1:\d+\)\.\.\. ready in [\d.]+ s \(pid \d+\)$/m)
    assert.match(outA, /^ready in [\d.]+ s: open http:\/\/127\.0\.0\.1:\d+\//m)
    const pgPid = Number(/postgres: starting .* \(pid (\d+)\)/.exec(outA)?.[1])
    const redisPid = Number(/redis: starting .* \(pid (\d+)\)/.exec(outA)?.[1])
    assert.ok(a.seen.has(pgPid) && a.seen.has(redisPid), 'both servers are children of the launcher')
    await assertTwoWorkersHealthy(a)

    // State written through the embedded servers...
    assert.equal((await request(a.port, 'POST', '/users', { body: user })).status, 201)
    const login = await request<{ token: string }>(a.port, 'POST', '/login', { body: user })
    assert.equal((await request(a.port, 'POST', '/cart/items', { token: login.body.token, body: { sku: 'kept', quantity: 3 } })).status, 200)

    // ...then the launcher dies without a word: its children keep running (detached).
    for (const p of descendants(a.proc.pid)) a.seen.add(p)
    a.proc.child.kill('SIGKILL')
    await a.proc.waitForExit(10000)
    assert.ok(isAlive(pgPid) && isAlive(redisPid), 'the servers outlived the killed launcher')

    b = await launch(env)
    const outB = text(b.proc)
    assert.match(outB, /^cluster: stopping the one an earlier launcher left running \(pid \d+\)\.\.\. stopped/m)
    assert.match(outB, /^redis: stopping the one an earlier launcher left running \(pid \d+\)\.\.\. stopped/m)
    assert.match(outB, new RegExp(`^postgres: stopping the server an earlier launcher left running \\(pid ${pgPid}\\)\\.\\.\\. stopped`, 'm'))
    assert.doesNotMatch(outB, /initdb/, 'the data folder is reused, not created again')
    assert.ok([...a.seen].every((p) => !isAlive(p)), 'everything of the killed launcher is gone')
    await assertTwoWorkersHealthy(b)

    // The user (Postgres) and the cart (Redis snapshot) written before the kill are still there.
    const again = await request<{ token: string }>(b.port, 'POST', '/login', { body: user })
    assert.equal(again.status, 200, JSON.stringify(again.body))
    const cart = await request<{ totalQuantity: number }>(b.port, 'GET', '/cart', { token: again.body.token })
    assert.equal(cart.body.totalQuantity, 3)

    await assertCleanStop(b, [...a.seen])
  } finally {
    await a?.proc.cleanup()
    await b?.proc.cleanup()
  }
})
