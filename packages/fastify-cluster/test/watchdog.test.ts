import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, existsSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { distinct, get, isAlive, waitFor } from '../../../test/helpers/index.ts'
import { isEvent, primaryReady, startCluster, unexpectedExit } from './start-cluster.ts'
import { load } from './load.ts'
import { PROBE_TIMEOUT, probe } from '../src/primary/watchdog.ts'
import { PROBE_ANSWER_LIMIT, PROBE_DIR_ENV } from '../src/probe.ts'

/** The probe folder a worker was given, read from its environment (/proc, same user). */
function probeDirOf (pid: number): string {
  const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
  const line = env.find((l) => l.startsWith(`${PROBE_DIR_ENV}=`))
  assert.ok(line, `worker ${pid} has ${PROBE_DIR_ENV}`)
  return line.slice(PROBE_DIR_ENV.length + 1)
}
const modeOf = (path: string): number => statSync(path).mode & 0o777

/** A unix socket server in a private temp folder, answering every connection with `answer`. */
async function fakeProbe (t: { after: (fn: () => void) => void }, path: string, answer: Buffer | string): Promise<Server> {
  const server = createServer((s) => { s.on('error', () => {}); s.end(answer) })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  t.after(() => { server.close() })
  return server
}

test('a worker that blocks its event loop forever: report with the blocking function, SIGKILL, replaced; the other worker serves throughout', async (t) => {
  const heartbeatTimeout = 3000
  const heartbeatInterval = 250
  const initialDelay = 100
  // The default report folder (no NCLUST_REPORT_DIR), under a state home that does not exist yet;
  // a secret in the environment that must not reach the report.
  const home = mkdtempSync(join(tmpdir(), 'nclust-watchdog-test-'))
  t.after(() => rmSync(home, { recursive: true, force: true }))
  const secret = `s3cret-${randomBytes(12).toString('hex')}`
  const { p, port } = await startCluster(t, {
    XDG_STATE_HOME: join(home, 'state'),
    NCLUST_TEST_SECRET: secret,
    NCLUST_HANG_PROBE: 'always',
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval, restartBackoff: { initialDelay } })
  })
  const bootMs = Math.max(...p.lines.filter(primaryReady).map((l) => Number(l.startMs)))

  const traffic = load(port, { clients: 50 })
  t.after(async () => { await traffic.stop() })
  await waitFor(() => traffic.result.ok > 200, 'load flowing', 30000)

  const blocked = (await get(port, '/block', { timeout: 10000 })).json() as { blocking: number }
  const tBlock = Date.now()
  const victim = p.lines.find((l) => primaryReady(l) && l.workerPid === blocked.blocking)!
  // The probe's socket: in a private folder with an unguessable name, not <tmp>/<predictable>.
  const probeDir = probeDirOf(blocked.blocking)
  await waitFor(() => existsSync(join(probeDir, `${blocked.blocking}.sock`)), 'the probe listening', 10000)
  assert.match(probeDir, /nclust-probe-[A-Za-z0-9]{6}$/)
  assert.equal(modeOf(probeDir), 0o700, 'probe socket folder is 0700')
  const other = p.lines.find((l) => primaryReady(l) && l.workerPid !== blocked.blocking)!

  const hung = await p.waitForLine((l) => l.workerPid === blocked.blocking && l.silentMs !== undefined && l.frames !== undefined, heartbeatTimeout + PROBE_TIMEOUT + 20000, 'the hung report line')
  const tHung = Date.now()
  const replacement = await p.waitForLine((l) => primaryReady(l) && l.workerId === victim.workerId && l.generation === 1, 60000, 'the replacement')
  const tReplaced = Date.now()
  // Keep-alive clients that lost their connection reconnected to the worker left; fresh connections reach the replacement.
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.deepEqual([...seen].sort(), [other.workerPid, replacement.workerPid].sort(), 'the replacement serves beside the other worker')
  const r = await traffic.stop()

  // Detected after heartbeatTimeout (not before), report taken, killed, replaced within timeout + capture + boot.
  const bound = heartbeatTimeout + 2 * heartbeatInterval + Number(hung.captureMs) + initialDelay + 3 * bootMs + 3000
  t.diagnostic(`hung → replaced in ${tReplaced - tBlock} ms (bound ${bound}; capture ${String(hung.captureMs)} ms, boot ${bootMs} ms); ` +
    `load: ${r.total} requests, ${r.ok} ok, ${r.errors.length} failed (in flight on the hung worker)`)
  assert.ok(Number(hung.silentMs) > heartbeatTimeout, 'not declared hung before the timeout')
  assert.ok(tReplaced - tBlock < bound, `replaced within ${bound} ms (took ${tReplaced - tBlock})`)

  const report = String(hung.report)
  const reportDir = join(home, 'state', 'nclust', 'reports')
  assert.equal(report.startsWith(reportDir + '/'), true, `the report is in the private default folder: ${report}`)
  assert.ok(String(hung.msg).includes(report), 'the log line names the file')
  assert.equal(modeOf(reportDir), 0o700, 'report folder is 0700')
  assert.equal(modeOf(join(home, 'state', 'nclust')), 0o700, 'its created parents are 0700 too')
  assert.equal(modeOf(report), 0o600, 'report file is 0600')
  const text = readFileSync(report, 'utf8')
  assert.equal(text.includes(secret), false, 'the report carries no environment value')
  const json = JSON.parse(text) as { header: { processId: number }, javascriptStack: { stack: string[] }, environmentVariables?: Record<string, string> }
  if (json.environmentVariables !== undefined) assert.equal(json.environmentVariables.NCLUST_TEST_SECRET, '[redacted]')
  assert.equal(json.header.processId, blocked.blocking, 'the report is the hung process\'s')
  assert.ok(json.javascriptStack.stack.some((f) => f.includes('blockTheLoopForever')), `the report's JS stack names the blocking function: ${JSON.stringify(json.javascriptStack.stack)}`)
  // The pause may land inside a builtin the loop calls (`at Math.random (<anonymous>)`): the blocking function is right under it.
  const top = (hung.frames as string[]).slice(0, 2)
  assert.ok(top.some((f) => /^at (Immediate\.)?blockTheLoopForever.* \(file:.*shared\.mjs:\d+:\d+\)$/.test(f)), `the logged top frames name the blocking function: ${JSON.stringify(top)}`)

  const exit = p.lines.find((l) => unexpectedExit(l) && l.workerPid === blocked.blocking)!
  assert.equal(exit.reason, 'hung')
  assert.equal(exit.signal, 'SIGKILL')
  assert.ok(p.lines.some((l) => isEvent('restart')(l) && l.workerId === victim.workerId && l.reason === 'hung'))
  assert.equal(isAlive(blocked.blocking), false)

  // The other worker served all along; the only failures are requests that were on the hung worker
  // when it was killed (at most one per client), none before it was detected.
  const duringHang = r.answers.filter((a) => a.at > tBlock && a.at < tHung && a.pid === other.workerPid).length
  assert.ok(duringHang > 50, `the other worker kept answering during the hang (${duringHang})`)
  assert.ok(r.errors.length <= 50, `failures bounded by the clients on the hung worker (${r.errors.length})`)
  for (const e of r.errors) assert.ok(e.at >= tHung - 1000, `no failure before the hung worker was killed: ${e.error}`)
  assert.equal(r.total, r.ok + r.errors.length, 'every request is counted once')
  assert.deepEqual([...r.statuses.keys()], [200])

  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
  assert.equal(existsSync(probeDir), false, 'the primary removes its probe folder when it stops')
})

test('the primary reads at most 64 KiB of a probe\'s answer, and refuses what is not an answer', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-probe-test-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const huge = join(dir, 'huge.sock')
  await fakeProbe(t, huge, Buffer.alloc(16 * 1024 * 1024, 'x'))
  const t0 = Date.now()
  const over = await probe(huge, 5000)
  assert.deepEqual(over.frames, [])
  assert.match(String(over.error), new RegExp(`answer over ${PROBE_ANSWER_LIMIT} bytes`))
  assert.ok(Date.now() - t0 < 4000, 'gave up on the size, not on the timeout')
  const junk = join(dir, 'junk.sock')
  await fakeProbe(t, junk, JSON.stringify({ frames: [1, 2], report: { evil: true } }) + '\n')
  assert.deepEqual(await probe(junk, 5000), { frames: [], error: 'unreadable answer' })
  const good = join(dir, 'good.sock')
  await fakeProbe(t, good, JSON.stringify({ frames: ['at f (file:///a.mjs:1:1)'], report: '/r.json' }) + '\n')
  assert.deepEqual(await probe(good, 5000), { frames: ['at f (file:///a.mjs:1:1)'], report: '/r.json' })
})

test('an oversized answer in place of a hung worker\'s probe: no report, the worker is killed and replaced, the cluster keeps serving', async (t) => {
  const heartbeatTimeout = 2000
  const { p, port } = await startCluster(t, {
    NCLUST_HANG_PROBE: 'always',
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250, restartBackoff: { initialDelay: 100 } })
  })
  // Both probes listening (their threads start once the worker is ready), then block one worker.
  const ready = p.lines.filter(primaryReady).map((l) => Number(l.workerPid))
  await waitFor(() => ready.every((pid) => existsSync(join(probeDirOf(pid), `${pid}.sock`))), 'probes listening', 20000)
  const blocked = (await get(port, '/block', { timeout: 10000 })).json() as { blocking: number }
  const victim = p.lines.find((l) => primaryReady(l) && l.workerPid === blocked.blocking)!
  // Another process of this user takes the probe's place (the folder is private to the user, so only
  // the user can: this is the worst case it allows) and answers with 16 MiB.
  const socket = join(probeDirOf(blocked.blocking), `${blocked.blocking}.sock`)
  unlinkSync(socket)
  await fakeProbe(t, socket, Buffer.alloc(16 * 1024 * 1024, '{'))
  const hung = await p.waitForLine((l) => l.workerPid === blocked.blocking && l.silentMs !== undefined && l.frames !== undefined, heartbeatTimeout + PROBE_TIMEOUT + 20000, 'the hung line')
  assert.equal(hung.report, undefined)
  assert.match(String(hung.error), /answer over 65536 bytes/)
  await p.waitForLine((l) => primaryReady(l) && l.workerId === victim.workerId && l.generation === 1, 60000, 'the replacement')
  assert.equal(isAlive(blocked.blocking), false)
  assert.equal((await get(port, '/', { timeout: 10000 })).status, 200, 'the cluster serves')
  assert.ok(isAlive(p.child.pid!), 'the primary is still running')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})
