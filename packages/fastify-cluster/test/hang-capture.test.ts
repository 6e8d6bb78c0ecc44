// hangProbe 'on-hang' (the default): the FIRST hang of a cluster is named (function, file:line) by the
// primary through the hung worker's inspector, started by SIGUSR1 at the hang; nothing runs before.
// And the report folder is capped (count and bytes, oldest first), whatever makes workers hang.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { get, isAlive, waitFor } from '../../../test/helpers/index.ts'
import { primaryReady, startCluster } from './start-cluster.ts'
import { PROBE_TIMEOUT } from '../src/primary/watchdog.ts'
import { INSPECT_PORT_ARG, frameLine, listeningSockets, parseListening } from '../src/primary/hang-capture.ts'
import { REPORT_FILE, hangReportName, pruneReports, reportsToRemove } from '../src/probe.ts'
import { diagnose } from '../src/worker/diagnose.ts'
import type { WorkerContext } from '../src/types.ts'

const modeOf = (path: string): number => statSync(path).mode & 0o777
const BLOCKING_FRAME = /^at blockTheLoopForever \(file:\/\/\/.*\/test\/fixtures\/shared\.mjs:3[3-6]:\d+\)$/

test('parseListening: LISTEN sockets of the given inodes only, addresses decoded', () => {
  const table = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:9E03 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0',
    '   2: 0100007F:9E04 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 0 10 -1',
    '   3: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0'
  ].join('\n')
  assert.deepEqual(parseListening(table, new Set(['111', '333', '444'])), [
    { inode: '111', host: '127.0.0.1', port: 0x9e03 },
    { inode: '444', host: '127.0.0.1', port: 3000 }
  ])
  const v6 = 'header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 555 1\n'
  assert.deepEqual(parseListening(v6, new Set(['555'])), [{ inode: '555', host: '[::1]', port: 8080 }])
})

test('frameLine: 1-based line and column, the url from scriptParsed when the frame has none', () => {
  const f = { functionName: 'spin', callFrameId: 'x', location: { scriptId: '7', lineNumber: 9, columnNumber: 0 } }
  assert.equal(frameLine({ ...f, url: 'file:///a.mjs' }, new Map()), 'at spin (file:///a.mjs:10:1)')
  assert.equal(frameLine({ ...f, functionName: '' }, new Map([['7', '/b.js']])), 'at <anonymous> (/b.js:10:1)')
})

test('reportsToRemove: newest kept, at most maxFiles and maxBytes, oldest removed first; the newest kept even alone over the bytes', () => {
  const f = (name: string, size: number, mtimeMs: number): { name: string, size: number, mtimeMs: number } => ({ name, size, mtimeMs })
  const files = [f('a', 10, 1), f('b', 10, 2), f('c', 10, 3), f('d', 10, 4)]
  assert.deepEqual(reportsToRemove(files, { maxFiles: 2, maxBytes: 1000 }).sort(), ['a', 'b'])
  assert.deepEqual(reportsToRemove(files, { maxFiles: 10, maxBytes: 25 }).sort(), ['a', 'b'])
  assert.deepEqual(reportsToRemove([f('old', 5, 1), f('huge', 500, 9)], { maxFiles: 10, maxBytes: 100 }), ['old'])
  assert.deepEqual(reportsToRemove([], { maxFiles: 1, maxBytes: 1 }), [])
  // Same time: by name, so the order is stable.
  assert.deepEqual(reportsToRemove([f('x1', 1, 5), f('x2', 1, 5)], { maxFiles: 1, maxBytes: 100 }), ['x1'])
})

test('pruneReports: only nclust report and diagnose files are counted and removed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-prune-test-'))
  try {
    const names = [hangReportName(11, 1000), hangReportName(12, 2000), 'nclust-w0-13-2026-12-07T04-20-11-123Z.heapsnapshot',
      'nclust-w1-14-2026-12-07T04-20-12-123Z.report.json', 'nclust-w1-14-2026-12-07T04-20-13-123Z.cpuprofile']
    names.forEach((n, i) => { writeFileSync(join(dir, n), 'x'.repeat(10)); const t = new Date(1_700_000_000_000 + i * 1000); utimesSync(join(dir, n), t, t) })
    for (const n of names) assert.match(n, REPORT_FILE)
    writeFileSync(join(dir, 'notes.txt'), 'mine')
    assert.deepEqual(pruneReports(dir, { maxFiles: 2, maxBytes: 1 << 20 }).sort(), names.slice(0, 3).sort())
    assert.deepEqual(readdirSync(dir).sort(), [...names.slice(3), 'notes.txt'].sort())
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('nclust diagnose into the report folder is capped too (reportMaxFiles), into another --out folder it is not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-diag-cap-test-'))
  const out = mkdtempSync(join(tmpdir(), 'nclust-diag-out-test-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }); rmSync(out, { recursive: true, force: true }) })
  const options = { reportDirectory: dir, reportMaxFiles: 2, reportMaxBytes: 1 << 30 }
  const ctx = (workerId: number): WorkerContext => ({ workerId, workers: 9, generation: 0, single: false, logger: undefined as unknown as WorkerContext['logger'] })
  const files: string[] = []
  for (let i = 0; i < 4; i++) {
    files.push((await diagnose({ kind: 'report', dir }, ctx(i), options)).file)
    await diagnose({ kind: 'report', dir: out }, ctx(i), options)
  }
  assert.deepEqual(readdirSync(dir).sort(), files.slice(-2).map((f) => f.slice(dir.length + 1)).sort(), 'the 2 newest kept')
  assert.equal(readdirSync(out).length, 4, 'a folder given with --out is the operator\'s: not pruned')
})

/** A 0700 state folder like systemd's StateDirectory= with StateDirectoryMode=0700 (the unit's `%S/nclust-example`). */
function stateDirectory (t: { after: (fn: () => void) => void }): string {
  const root = mkdtempSync(join(tmpdir(), 'nclust-hang-test-'))
  t.after(() => rmSync(root, { recursive: true, force: true }))
  const dir = join(root, 'var-lib', 'nclust-example')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  return dir
}

test('every default: the first hang names the blocking function and file:line in the log line and the report; no inspector port before the hang, the worker (and its port) gone after', async (t) => {
  const heartbeatTimeout = 3000
  const reports = stateDirectory(t)
  const secret = `s3cret-${randomBytes(12).toString('hex')}`
  const { p, port } = await startCluster(t, {
    NCLUST_REPORT_DIR: reports, // as the systemd unit sets it: Environment=NCLUST_REPORT_DIR=%S/nclust-example
    NCLUST_TEST_SECRET: secret,
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250, restartBackoff: { initialDelay: 100 } })
  })
  const pids = p.lines.filter(primaryReady).map((l) => Number(l.workerPid))
  for (const pid of pids) {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    assert.ok(args.includes(INSPECT_PORT_ARG), 'forked with an inspect port of 0')
    assert.deepEqual(args.filter((a) => a.startsWith('--inspect-port=') && a !== INSPECT_PORT_ARG), ['--inspect-port=0'], 'node:cluster\'s own port is 0 too, not 9229 + n')
    assert.deepEqual(listeningSockets(pid), [], 'no inspector (no listening socket) in an idle worker')
  }

  const blocked = (await get(port, '/block', { timeout: 10000 })).json() as { blocking: number }
  const tBlock = Date.now()
  const victim = p.lines.find((l) => primaryReady(l) && l.workerPid === blocked.blocking)!
  const hung = await p.waitForLine((l) => l.workerPid === blocked.blocking && l.silentMs !== undefined && l.frames !== undefined,
    heartbeatTimeout + PROBE_TIMEOUT + 30000, 'the hung line')
  const tName = Date.now()
  const frames = hung.frames as string[]
  assert.match(frames[0] ?? '', BLOCKING_FRAME, JSON.stringify(hung))
  assert.match(String(hung.msg), /at blockTheLoopForever \(file:\/\/\/.*shared\.mjs:3[3-6]:\d+\)/, 'the log line itself names it')
  assert.equal(hung.error, undefined)
  // A port the kernel chose (port 0), not node:cluster's 9229 + n, which may be taken or shared by two clusters.
  const inspectorPort = Number(hung.inspectorPort)
  assert.ok(inspectorPort > 0 && (inspectorPort < 9229 || inspectorPort > 9229 + 64), `inspector port ${inspectorPort}`)
  const inspectorMs = Number(hung.inspectorMs)
  assert.ok(inspectorMs > 0 && inspectorMs <= PROBE_TIMEOUT + 500, `the inspector window is bounded: ${inspectorMs} ms`)
  t.diagnostic(`Node ${process.version}: hang → name ${tName - tBlock} ms (heartbeatTimeout ${heartbeatTimeout} ms, silentMs ${String(hung.silentMs)}); ` +
    `capture ${String(hung.captureMs)} ms, inspector open ${inspectorMs} ms`)

  const report = String(hung.report)
  assert.equal(report.startsWith(reports + '/'), true, report)
  assert.equal(modeOf(report), 0o600)
  assert.equal(modeOf(reports), 0o700)
  const text = readFileSync(report, 'utf8')
  assert.equal(text.includes(secret), false, 'no environment value in the report')
  const parsed = JSON.parse(text) as { nclustHang: { frames: string[] }, javascriptStack: { stack: string[] }, environmentVariables?: Record<string, string> }
  assert.match(parsed.nclustHang.frames[0] ?? '', BLOCKING_FRAME)
  assert.ok(parsed.javascriptStack.stack.some((l) => l.includes('blockTheLoopForever')), 'the report\'s own stack has it')
  // Node 22.13+ leaves the field out (excludeEnv); older Node: names kept, values redacted.
  if (parsed.environmentVariables !== undefined) assert.equal(parsed.environmentVariables.NCLUST_TEST_SECRET, '[redacted]')

  await waitFor(() => !isAlive(blocked.blocking), 'the hung worker killed', 10000)
  await p.waitForLine((l) => primaryReady(l) && l.workerId === victim.workerId && l.generation === 1, 60000, 'the replacement')
  assert.equal((await get(port, '/', { timeout: 10000 })).status, 200)
  p.child.kill('SIGTERM')
  const exit = await p.waitForExit(30000)
  assert.equal(exit.code, 0, p.lines.slice(-8).map((l) => JSON.stringify(l)).join('\n'))
})

test('workers that hang again and again: at most reportMaxFiles report files, the newest kept; other files left alone', async (t) => {
  const heartbeatTimeout = 2000
  const reports = stateDirectory(t)
  writeFileSync(join(reports, 'operator-notes.txt'), 'not ours')
  const { p, port } = await startCluster(t, {
    NCLUST_REPORT_DIR: reports,
    NCLUST_REPORT_MAX_FILES: '2',
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250, restartBackoff: { initialDelay: 100 } })
  })
  const hangs = 5
  const written: string[] = []
  for (let i = 0; i < hangs; i++) {
    const blocked = await waitFor(async () => {
      const r = await get(port, '/block', { timeout: 10000 }).catch(() => undefined)
      return r?.status === 200 ? (r.json() as { blocking: number }).blocking : undefined
    }, `block #${i + 1}`, 60000)
    const hung = await p.waitForLine((l) => l.workerPid === blocked && l.silentMs !== undefined && l.frames !== undefined,
      heartbeatTimeout + PROBE_TIMEOUT + 30000, `hung line #${i + 1}`)
    assert.match((hung.frames as string[])[0] ?? '', BLOCKING_FRAME)
    written.push(String(hung.report))
    const files = readdirSync(reports).filter((n) => REPORT_FILE.test(n))
    assert.ok(files.length <= 2, `after hang ${i + 1}: ${files.length} report files`)
  }
  const left = readdirSync(reports).sort()
  assert.deepEqual(left, ['operator-notes.txt', ...written.slice(-2).map((f) => f.slice(reports.length + 1))].sort(), `${hangs} hangs, 2 reports kept`)
  await waitFor(() => p.lines.filter(primaryReady).length >= 2 + hangs, 'every hung worker replaced', 60000)
  p.child.kill('SIGTERM')
  const exit = await p.waitForExit(30000)
  assert.equal(exit.code, 0, p.lines.slice(-8).map((l) => JSON.stringify(l)).join('\n'))
})

test('hangProbe off: workers forked without the inspect port, the hung worker killed and replaced without a stack, no report', async (t) => {
  const heartbeatTimeout = 2000
  const reports = stateDirectory(t)
  const { p, port } = await startCluster(t, {
    NCLUST_REPORT_DIR: reports,
    NCLUST_HANG_PROBE: 'off',
    HEARTBEAT_TIMEOUT: String(heartbeatTimeout),
    FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 250, restartBackoff: { initialDelay: 100 } })
  })
  for (const pid of p.lines.filter(primaryReady).map((l) => Number(l.workerPid))) {
    assert.equal(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(INSPECT_PORT_ARG), false)
  }
  const blocked = (await get(port, '/block', { timeout: 10000 })).json() as { blocking: number }
  const victim = p.lines.find((l) => primaryReady(l) && l.workerPid === blocked.blocking)!
  const hung = await p.waitForLine((l) => l.workerPid === blocked.blocking && l.silentMs !== undefined && l.frames !== undefined,
    heartbeatTimeout + 30000, 'the hung line')
  assert.deepEqual(hung.frames, [])
  assert.match(String(hung.error), /hangProbe: off/)
  await p.waitForLine((l) => primaryReady(l) && l.workerId === victim.workerId && l.generation === 1, 60000, 'the replacement')
  assert.deepEqual(readdirSync(reports), [])
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})
