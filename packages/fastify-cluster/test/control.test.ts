// The control socket and the `nclust` commands that use it, on real clusters through the committed bin.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { distinct, freePort, isAlive, spawnNode, waitFor, type LogLine } from '../../../test/helpers/index.ts'
import { copyForUser, otherUser } from '../../../test/helpers/other-user.ts'
import { fixture, isEvent, startCluster } from './start-cluster.ts'
import { load } from './load.ts'
import { resolveOptions } from '../src/options.ts'
import { defaultControlPath } from '../src/control-protocol.ts'
import { claimControl } from '../src/primary/control.ts'
const reloadStart = (l: LogLine): boolean => isEvent('reload')(l) && l.phase === 'start'

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))

interface Run { code: number | null, stdout: string, stderr: string, ms: number }
/** The bin as an operator runs it, asynchronously (the test keeps serving load meanwhile). */
function nclust (args: string[], env: Record<string, string> = {}, cmd: string[] = [process.execPath, bin]): Promise<Run> {
  const t0 = Date.now()
  const [file = '', ...pre] = cmd
  return new Promise((resolve) => {
    execFile(file, [...pre, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/', ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout, stderr, ms: Date.now() - t0 })
    })
  })
}

/** One raw request on the socket: the protocol's own answers, without the client. */
function raw (path: string, data: string | undefined): Promise<{ answer: any, ms: number }> {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    const s = createConnection(path)
    let buf = ''
    s.on('connect', () => { if (data !== undefined) s.write(data) })
    s.on('data', (d) => { buf += d.toString() })
    s.on('error', () => {}) // EPIPE after a refused oversized request: the answer came first
    s.on('close', () => {
      try { resolve({ answer: JSON.parse(buf), ms: Date.now() - t0 }) } catch { reject(new Error(`no JSON answer: ${JSON.stringify(buf)}`)) }
    })
  })
}

function privateDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-control-')) // random name, 0700
  return dir
}

test('the default socket path: private per-user folder, differs by folder and port; NCLUST_CONTROL and false', () => {
  const env = { XDG_RUNTIME_DIR: '/run/user/1000' }
  const a = defaultControlPath(3000, env, '/srv/a', ['app.js'])
  assert.match(a, /^\/run\/user\/1000\/nclust\/[0-9a-f]{16}\.sock$/)
  assert.notEqual(a, defaultControlPath(3000, env, '/srv/b', ['app.js']), 'another folder')
  assert.notEqual(a, defaultControlPath(3001, env, '/srv/a', ['app.js']), 'another port')
  assert.notEqual(a, defaultControlPath(3000, env, '/srv/a', ['other.js']), 'another entry')
  assert.equal(a, defaultControlPath(3000, env, '/srv/a', ['app.js']), 'stable')
  assert.match(defaultControlPath(3000, {}, '/srv/a', ['app.js']), /\/\.nclust\/run\/[0-9a-f]{16}\.sock$/)
  assert.ok(!defaultControlPath(3000, {}, '/srv/a', []).startsWith(tmpdir()), 'never the shared temp folder')
  // A relative XDG_RUNTIME_DIR is ignored (XDG Base Directory spec): the socket path is never relative.
  for (const runtime of ['run/user/1000', './x', '']) {
    const path = defaultControlPath(3000, { XDG_RUNTIME_DIR: runtime }, '/srv/a', ['app.js'])
    assert.match(path, /^\/.*\/\.nclust\/run\/[0-9a-f]{16}\.sock$/, `XDG_RUNTIME_DIR=${JSON.stringify(runtime)} gives ${path}`)
  }
  assert.equal(resolveOptions({ env: { NCLUST_CONTROL: 'false' } }).control, false)
  assert.equal(resolveOptions({ control: false }).control, false)
  assert.equal(resolveOptions({ env: { NCLUST_CONTROL: '/x/y.sock' } }).control, '/x/y.sock')
  assert.throws(() => resolveOptions({ env: { NCLUST_CONTROL: `/${'x'.repeat(120)}.sock` } }), /env NCLUST_CONTROL must be a unix socket path \(at most 107 bytes once absolute\).*, got "/)
  assert.throws(() => resolveOptions({ control: 42 as unknown as string }), /option control must be .*, got 42$/)
})

test('status lists the serving pids; diagnose under 50 keep-alive clients; a reload asked during one queues one more pass; scale; stop', async (t) => {
  const dir = privateDir()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'c.sock')
  const secret = 'nclust-secret-value-7f3a'
  // A new generation takes 1.5 s to build, so the second reload surely arrives while the first runs.
  const reports = join(dir, 'reports') // the cluster's reportDirectory: diagnose without --out writes there
  const { p, port } = await startCluster(t, { NCLUST_CONTROL: sock, NCLUST_REPORT_DIR: reports, FIXTURE_SLOW_MS: '1500', FIXTURE_SLOW_WHICH: 'new', MY_API_TOKEN: secret }, 2, { app: 'slow-start-app.mjs' })
  const env = { NCLUST_CONTROL: sock }
  assert.ok(p.lines.some((l) => l.msg === `control socket: ${sock}`), 'the primary logs the path')
  assert.equal(statSync(sock).mode & 0o777, 0o600)

  // status: exactly the pids that serve, once each has sent a heartbeat.
  const serving = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  const s = await waitFor(async () => {
    const r = await nclust(['status', '--json'], env)
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout)
    return j.workers.every((w: { rss: number | null }) => w.rss !== null) && j
  }, 'status with heartbeat figures', 15000)
  assert.equal(s.primary.pid, p.pid)
  assert.equal(s.primary.node, process.version)
  assert.deepEqual(s.primary.workers, { desired: 2, ready: 2 })
  assert.deepEqual(s.workers.map((w: { pid: number }) => w.pid).sort(), [...serving].sort())
  for (const w of s.workers) {
    assert.equal(w.state, 'ready')
    for (const k of ['id', 'generation', 'uptime', 'rss', 'cpu', 'elu', 'requests', 'restarts']) assert.equal(typeof w[k], 'number', k)
  }
  const table = await nclust(['status'], env)
  assert.equal(table.code, 0)
  for (const pid of serving) assert.match(table.stdout, new RegExp(`\\b${pid}\\s+ready\\b`))

  // A second cluster on the same socket is refused before it forks anything.
  const second = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(await freePort()), HOST: '127.0.0.1', NCLUST_CONTROL: sock } })
  t.after(() => second.cleanup())
  assert.equal((await second.waitForExit(20000)).code, 1)
  assert.match(second.stderr(), /NCLUST_CLUSTER_CONTROL_IN_USE: control socket .*c\.sock belongs to a running cluster \(primary pid \d+/)
  assert.equal(second.stderr().trim().split('\n').length, 1, 'one line')
  assert.ok(!second.lines.some((l) => l.msg === 'worker forked'), 'nothing forked (the first forks precede any event listener: the log line is their record)')

  // The protocol's bounds, raw.
  const idle = raw(sock, undefined)
  const [unknown, version, big] = await Promise.all([
    raw(sock, '{"v":1,"cmd":"restart"}\n'),
    raw(sock, '{"v":2,"cmd":"status"}\n'),
    raw(sock, `{"v":1,"cmd":"status","args":{"x":"${'a'.repeat(70 * 1024)}"}}\n`)
  ])
  assert.equal(unknown.answer.error.code, 'unknown-command')
  assert.match(unknown.answer.error.message, /unknown command "restart": expected one of hello, status, reload, scale, stop, diagnose/)
  assert.equal(version.answer.error.code, 'version')
  assert.equal(big.answer.error.code, 'too-large')
  const idleAnswer = await idle
  assert.equal(idleAnswer.answer.error.code, 'idle')
  assert.ok(idleAnswer.ms < 10000, `an idle client is dropped (${idleAnswer.ms} ms)`)

  // Diagnostics of worker 0 while 50 keep-alive clients keep both workers busy.
  const out = join(dir, 'diag')
  const traffic = load(port, { clients: 50, minMs: 5, maxMs: 20, durationCap: 60000 })
  t.after(async () => { await traffic.stop() })
  const heap = await nclust(['diagnose', '0', '--heap', '--out', out], env)
  const cpu = await nclust(['diagnose', '0', '--cpu', '500', '--out', out], env)
  const report = await nclust(['diagnose', '1', '--report', '--out', out], env)
  const result = await traffic.stop()
  for (const r of [heap, cpu, report]) assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(result.errors, [], 'no request failed while a worker was diagnosed')
  assert.ok(result.ok > 100, `load ran (${result.ok} answers)`)
  assert.equal(result.pids.size, 2)
  const files = readdirSync(out)
  assert.equal(files.length, 3)
  assert.equal(statSync(out).mode & 0o777, 0o700)
  for (const f of files) assert.equal(statSync(join(out, f)).mode & 0o777, 0o600, f)
  const file = (ext: string): string => join(out, files.find((f) => f.endsWith(ext)) ?? assert.fail(ext))
  const snapshot = JSON.parse(readFileSync(file('.heapsnapshot'), 'utf8'))
  assert.ok(Array.isArray(snapshot.snapshot.meta.node_fields), 'snapshot.meta')
  const profile = JSON.parse(readFileSync(file('.cpuprofile'), 'utf8'))
  assert.ok(profile.nodes.length > 0 && profile.samples.length > 0 && profile.endTime > profile.startTime)
  const reportText = readFileSync(file('.report.json'), 'utf8')
  assert.ok(JSON.parse(reportText).header.processId === s.workers[1].pid)
  assert.ok(!reportText.includes(secret), 'no env value in the report')
  assert.ok(!reportText.includes(process.env.PATH ?? 'no PATH'), 'no env value in the report')
  const inReports = await nclust(['diagnose', '0', '--report'], env)
  assert.equal(inReports.code, 0, inReports.stderr)
  assert.ok(inReports.stdout.startsWith(join(reports, '')), `without --out, into the cluster's reportDirectory: ${inReports.stdout}`)
  assert.deepEqual(readdirSync(reports).map((f) => statSync(join(reports, f)).mode & 0o777), [0o600])

  // Two reloads at once: the first runs pass 1; the second is queued as one more full pass and
  // reports the generation each slot ends on (2: the code on disk when it was asked, or newer).
  const first = nclust(['reload'], env)
  await p.waitForLine(reloadStart, 20000, 'the reload began')
  const queued = await nclust(['reload'], env)
  const reload = await first
  assert.equal(reload.code, 0, reload.stderr)
  assert.equal(queued.code, 0, queued.stderr)
  const movesOf = (out: string): Array<{ old: number, new: number, generation: number }> =>
    [...out.matchAll(/^worker (\d): (\d+) -> (\d+) \(generation (\d+)\)$/gm)].map((m) => ({ old: Number(m[2]), new: Number(m[3]), generation: Number(m[4]) }))
  assert.deepEqual(movesOf(reload.stdout).map((m) => m.generation), [1, 1], reload.stdout)
  assert.deepEqual(movesOf(reload.stdout).map((m) => m.old).sort(), [...serving].sort())
  const moves = movesOf(queued.stdout)
  assert.deepEqual(moves.map((m) => m.generation), [2, 2], queued.stdout)
  const after = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.deepEqual([...after].sort(), moves.map((m) => m.new).sort(), 'the new pids serve')
  for (const pid of serving) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30000)

  const up = await nclust(['scale', '3'], env)
  assert.equal(up.code, 0, up.stderr)
  assert.match(up.stdout, /scaled from 2 to 3 workers/)
  const three = JSON.parse((await nclust(['status', '--json'], env)).stdout)
  assert.deepEqual(three.primary.workers, { desired: 3, ready: 3 })
  assert.equal((await nclust(['scale', '2'], env)).code, 0)

  // A stop during a reload: the reload reports that it was cut short, not a failed start.
  const cut = nclust(['reload'], env)
  await waitFor(() => p.lines.filter(reloadStart).length >= 3, 'the third pass began', 20000)
  const stop = await nclust(['stop'], env)
  const cutShort = await cut
  assert.equal(cutShort.code, 1)
  assert.match(cutShort.stdout, /^reload did not finish: the cluster is shutting down$/m)
  assert.equal(stop.code, 0, stop.stderr)
  assert.match(stop.stdout, /cluster stopped, exit code 0/)
  assert.equal((await p.waitForExit(30000)).code, 0)
  assert.ok(!existsSync(sock), 'the socket is removed on exit')
})

test('a reload of code that throws exits 1 naming the error while the old pids serve; a stale socket after kill -9 is replaced; another uid is refused', async (t) => {
  const dir = privateDir()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'c.sock')
  const env = { NCLUST_CONTROL: sock }
  const { p, port } = await startCluster(t, { NCLUST_CONTROL: sock }, 2, { app: 'new-generation-fails-app.mjs' })
  const before = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)

  const broken = await nclust(['reload'], env)
  t.diagnostic(`nclust reload reported the broken deploy in ${broken.ms} ms`)
  assert.equal(broken.code, 1)
  assert.match(broken.stdout, /reload failed: worker 0's new generation \(pid \d+\) did not start \(start-failed\)/)
  assert.match(broken.stdout, /Error: the new generation cannot start \(fixture\)\n\s+at /)
  for (const pid of before) assert.match(broken.stdout, new RegExp(`^worker \\d: ${pid} \\(not replaced\\) \\(generation 0\\)$`, 'm'))
  assert.match(broken.stdout, new RegExp(`the old workers still serve: ${[...before].join(', ').replace(/\d+/g, '\\d+')}`))
  assert.ok(broken.ms < 30000, 'within the start budget')
  assert.deepEqual([...await distinct(port, '/', (b: { pid: number }) => b.pid, 2)].sort(), [...before].sort(), 'the old pids serve')
  const status = JSON.parse((await nclust(['status', '--json'], env)).stdout)
  assert.equal(status.workers[0].lastExit.reason, 'start-failed')
  assert.equal(status.workers[0].lastExit.error, 'the new generation cannot start (fixture)')

  // kill -9: the socket file stays behind, nobody accepts on it.
  p.child.kill('SIGKILL')
  await p.waitForExit(10000)
  for (const pid of before) await waitFor(() => !isAlive(pid), `worker ${pid} gone`, 30000)
  assert.ok(lstatSync(sock).isSocket(), 'stale socket left')
  const none = await nclust(['status'], env)
  assert.equal(none.code, 1)
  assert.match(none.stderr, /no cluster listens on .*c\.sock \(ECONNREFUSED\)/)

  const { p: again } = await startCluster(t, { NCLUST_CONTROL: sock }, 2)
  const s2 = JSON.parse((await nclust(['status', '--json'], env)).stdout)
  assert.equal(s2.primary.pid, again.pid, 'the new primary took the stale path')

  // Another user: refused by the folder (0700), and by the socket's own mode (0600) once the folder lets them through.
  // The user runs the real client from a copy of the built package in a folder of its own: the clone
  // itself may sit in a folder only root can read (a clone under /root), which must not matter here.
  const other = otherUser(t, 'nclust-ctl-test')
  if (typeof other === 'string') {
    t.diagnostic(`${other}: the other-uid check is skipped`)
  } else {
    // The client's code path (bin → dist/cli.js → options.js, control-client.js) needs node's own
    // modules and two small dependencies of the package (@fastify/error, the drain's defaults).
    const pkg = copyForUser(other, 'fastify-cluster', ['bin', 'dist', 'package.json'].map((f) => fileURLToPath(new URL(`../${f}`, import.meta.url))))
    copyForUser(other, 'fastify-cluster/node_modules/@fastify', [fileURLToPath(new URL('../node_modules/@fastify/error', import.meta.url))])
    copyForUser(other, 'fastify-cluster/node_modules/@nclust/fastify-drain', ['dist', 'package.json'].map((f) => fileURLToPath(new URL(`../../fastify-drain/${f}`, import.meta.url))))
    const asOther = [...other.prefix, other.node, join(pkg, 'bin', 'nclust.js')]
    const byDir = await nclust(['status', '--control', sock], {}, asOther)
    assert.equal(byDir.code, 1)
    assert.match(byDir.stderr, /permission denied on .*c\.sock/)
    chmodSync(dir, 0o711)
    const bySocket = await nclust(['status', '--control', sock], {}, asOther)
    assert.equal(bySocket.code, 1)
    assert.match(bySocket.stderr, /permission denied on .*c\.sock: the control socket belongs to another user/)
    chmodSync(dir, 0o700)
  }
  again.child.kill('SIGTERM')
  assert.equal((await again.waitForExit(30000)).code, 0)
  assert.ok(!existsSync(sock))
})

test('a default control folder out of reach (HOME=/ in a container, read-only root) turns the socket off with a warning; the cluster serves', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-control-home-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const home = join(dir, 'not-a-folder') // a file: no folder can be made below it
  writeFileSync(home, '')
  const { p, port } = await startCluster(t, { HOME: home, XDG_RUNTIME_DIR: '' }, 2)
  assert.match(p.stderr(), /nclust: control socket off: control socket folder .*not-a-folder.* cannot be created/)
  assert.equal((await distinct(port, '/', (b: { pid: number }) => b.pid, 2)).size, 2)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(20000)).code, 0)
  // A path the operator chose is different: it must work, or the start fails naming it.
  const bad = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(await freePort()), HOST: '127.0.0.1', NCLUST_CONTROL: join(home, 'c.sock') } })
  t.after(() => bad.cleanup())
  assert.equal((await bad.waitForExit(20000)).code, 1)
  assert.match(bad.stderr(), /control socket folder .*not-a-folder.* cannot be created/)
})

// Issue 26 §4: one request per connection, read up to its first line, closed after the reply;
// over the connection limit a client is told `busy`; a group-writable folder is refused.
test('the control socket: only the first line runs, the connection is closed after the reply, over the limit a client hears busy', async (t) => {
  const dir = privateDir()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'c.sock')
  const { p } = await startCluster(t, { NCLUST_CONTROL: sock }, 2)
  const line = (cmd: string): string => JSON.stringify({ v: 1, cmd }) + '\n'

  // `status`, `stop` and `reload` in one write: only `status` runs.
  const first = await raw(sock, line('status') + line('stop') + line('reload'))
  assert.equal(first.answer.ok, true)
  assert.equal(first.answer.result.workers.length, 2, 'the answer is the status')
  const again = await raw(sock, line('status'))
  assert.equal(again.answer.ok, true, 'the cluster still answers: stop did not run')
  assert.ok(!p.lines.some((l) => reloadStart(l) || isEvent('shutdown')(l)), 'neither stop nor reload ran')

  // 16 clients that ask, get their answer and never close their side: the primary closes them (LINGER_MS).
  const clients = Array.from({ length: 16 }, () => {
    const s = createConnection(sock)
    s.on('error', () => {})
    s.on('connect', () => s.write(line('hello')))
    s.resume()
    return { s, closed: new Promise<void>((resolve) => s.on('close', () => resolve())) }
  })
  t.after(() => { for (const c of clients) c.s.destroy() })
  await Promise.all(clients.map(async (c) => await c.closed))
  // The primary counts a connection out on its own side's 'close', a moment after the client's: ask until served.
  let after: Awaited<ReturnType<typeof raw>> | undefined
  await waitFor(async () => { after = await raw(sock, line('hello')).catch(() => undefined); return after?.answer.ok === true }, 'the 17th client is served', 10000)
  assert.equal(after?.answer.result.pid, p.child.pid, 'the 17th client is served')

  // 16 clients that say nothing hold every connection for IDLE_TIMEOUT_MS: the 17th hears `busy`.
  const silent = Array.from({ length: 16 }, () => {
    const s = createConnection(sock)
    s.on('error', () => {})
    return { s, connected: new Promise<void>((resolve) => s.on('connect', () => resolve())) }
  })
  t.after(() => { for (const c of silent) c.s.destroy() })
  await Promise.all(silent.map(async (c) => await c.connected))
  const busy = await raw(sock, line('status'))
  assert.equal(busy.answer.ok, false)
  assert.equal(busy.answer.error.code, 'busy')
  for (const c of silent) c.s.destroy()
  await waitFor(async () => (await raw(sock, line('hello')).catch(() => undefined))?.answer.ok === true, 'served again once they left', 10000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('a group-writable control folder is refused, naming it', async (t) => {
  const dir = privateDir()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  chmodSync(dir, 0o770)
  await assert.rejects(claimControl(join(dir, 'c.sock')), new RegExp(`control socket folder ${dir} is writable by its group`))
  chmodSync(dir, 0o700)
  const server = await claimControl(join(dir, 'c.sock'))
  await new Promise((resolve) => server.close(resolve))
})
