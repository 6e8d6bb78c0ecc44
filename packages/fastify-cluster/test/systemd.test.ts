import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseListenFds, httpFds, namedFd } from '../src/systemd/listen-fds.ts'
import { statusLine, watchdogInterval } from '../src/systemd/notify.ts'
import { freePort, get, isAlive, spawnProcess, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'
import { fixture, fixturePath, isEvent, primaryReady } from './start-cluster.ts'

/**
 * systemd's own protocols with systemd's own parts: `systemd-socket-activate` passes the listening
 * socket (LISTEN_FDS), a real NOTIFY_SOCKET (an AF_UNIX datagram socket with SO_PASSCRED, in a small
 * Python helper since Node cannot open one) receives what the primary says through `systemd-notify`.
 */

const listener = fileURLToPath(new URL('./fixtures/systemd/notify-listener.py', import.meta.url))
const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const has = (cmd: string): Promise<boolean> => new Promise((resolve) => execFile(cmd, ['--version'], (err) => resolve(err === null)))

function private0700 (t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-systemd-'))
  chmodSync(dir, 0o700)
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('LISTEN_FDS parsing: only for this pid, names, and the sockets for HTTP', () => {
  assert.equal(parseListenFds({}, 7), undefined)
  assert.equal(parseListenFds({ LISTEN_FDS: '1', LISTEN_PID: '8' }, 7), undefined, 'meant for another process')
  assert.deepEqual(parseListenFds({ LISTEN_FDS: '2', LISTEN_PID: '7' }, 7), { fds: [3, 4], names: ['unknown', 'unknown'] })
  const l = parseListenFds({ LISTEN_FDS: '3', LISTEN_PID: '7', LISTEN_FDNAMES: 'http:nclust-control:other' }, 7)
  assert.ok(l !== undefined)
  assert.deepEqual(httpFds(l), [3])
  assert.equal(namedFd(l, 'nclust-control'), 4)
  assert.deepEqual(httpFds({ fds: [3, 4], names: ['a', 'nclust-control'] }), [3])
  assert.throws(() => parseListenFds({ LISTEN_FDS: 'x', LISTEN_PID: '7' }, 7), /invalid env LISTEN_FDS/)
  assert.equal(watchdogInterval({ WATCHDOG_USEC: '2000000' }, 7), 1000)
  assert.equal(watchdogInterval({ WATCHDOG_USEC: '2000000', WATCHDOG_PID: '8' }, 7), undefined)
  assert.equal(watchdogInterval({}, 7), undefined)
  assert.equal(statusLine(2, 3, 4, 5), 'STATUS=2/3 workers ready, generation 4, primary pid 5')
})

test('systemd-socket-activate: the first connection waits in the backlog while the cluster starts; requests spread evenly over the workers', { skip: await has('systemd-socket-activate') ? undefined : 'no systemd-socket-activate' }, async (t) => {
  const port = await freePort()
  const dir = private0700(t)
  const env: Record<string, string> = { WORKER_COUNT: '3', PORT: '1', HOST: '127.0.0.1', NCLUST_CONTROL: join(dir, 'c.sock'), NCLUST_LOG_FORMAT: 'json', LOG_LEVEL: 'info', PATH: process.env.PATH ?? '' }
  const p = spawnProcess('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=http', ...Object.entries(env).map(([k, v]) => `-E${k}=${v}`), process.execPath, fixture])
  t.after(() => p.cleanup())
  await waitFor(() => p.output().includes('Listening on'), 'systemd-socket-activate listening', 30_000)
  // Nothing runs yet: systemd-socket-activate starts the primary on the first connection, which waits.
  const first = await get(port, '/', { timeout: 90_000 })
  assert.equal(first.status, 200)
  const serving = await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('serves the inherited socket (fd 3)'), 30_000, 'the primary serving fd 3')
  assert.equal(serving.role, 'primary')
  await waitFor(() => p.lines.filter(primaryReady).length >= 3, '3 workers ready', 90_000)
  const counts = new Map<number, number>()
  for (let i = 0; i < 300; i++) {
    const r = await get(port, '/')
    assert.equal(r.status, 200)
    const pid = (r.json() as { pid: number }).pid
    counts.set(pid, (counts.get(pid) ?? 0) + 1)
  }
  const n = [...counts.values()]
  t.diagnostic(`300 new connections over an inherited socket: ${JSON.stringify([...counts])}`)
  assert.equal(counts.size, 3, 'every worker served')
  assert.ok(Math.max(...n) - Math.min(...n) <= 30, `within 10 % of an even share: ${JSON.stringify(n)}`)
  // PORT=1 was never bound: the primary served systemd's socket only.
  assert.ok(!p.lines.some((l: LogLine) => l.level !== undefined && l.level >= 50), 'no error logged')
})

async function notifyListener (t: { after: (fn: () => Promise<void>) => void }, dir: string): Promise<{ path: string, l: Spawned, msgs: () => Array<{ sender: number, fields: Record<string, string>, monotonic_usec: number }> }> {
  const path = join(dir, 'notify.sock')
  const l = spawnProcess('python3', [listener, path])
  t.after(() => l.cleanup())
  await l.waitForLine((x) => x.msg === 'listening', 30_000, 'the notify listener')
  // systemd-notify follows each message with BARRIER=1 from its own pid (it waits for systemd to read it): not ours
  return { path, l, msgs: () => l.lines.filter((x) => x.msg === 'notify' && (x.fields as Record<string, string>).BARRIER === undefined) as never }
}

test('sd_notify: READY=1 once every worker is ready, STATUS, WATCHDOG=1, RELOADING=1 + MONOTONIC_USEC then READY=1 around a reload, STOPPING=1; all from the primary', { skip: await has('systemd-notify') ? undefined : 'no systemd-notify' }, async (t) => {
  const dir = private0700(t)
  const n = await notifyListener(t, dir)
  const port = await freePort()
  const p = spawnProcess(process.execPath, [fixture], { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_CONTROL: join(dir, 'c.sock'), NOTIFY_SOCKET: n.path, WATCHDOG_USEC: '600000' } })
  t.after(() => p.cleanup())
  const ready = await waitFor(() => n.msgs().find((m) => m.fields.READY === '1'), 'READY=1', 90_000)
  assert.equal(p.lines.filter(primaryReady).length, 2, 'READY=1 came after both workers were ready')
  assert.equal(ready.sender, p.pid, 'sent as the primary (systemd-notify passes our pid in its credentials)')
  assert.match(ready.fields.STATUS ?? '', /^2\/2 workers ready, generation \d+, primary pid \d+$/)
  await waitFor(() => n.msgs().filter((m) => m.fields.WATCHDOG === '1').length >= 2, 'WATCHDOG=1 pings', 30_000)
  // a workers' env carries no NOTIFY_SOCKET: only the primary speaks
  assert.ok(n.msgs().every((m) => m.sender === p.pid), 'every datagram from the primary')

  const before = n.msgs().length
  p.child.kill('SIGHUP')
  const reloading = await waitFor(() => n.msgs().slice(before).find((m) => m.fields.RELOADING === '1'), 'RELOADING=1', 60_000)
  const usec = Number(reloading.fields.MONOTONIC_USEC)
  assert.ok(Number.isInteger(usec) && usec <= reloading.monotonic_usec && usec > reloading.monotonic_usec - 60_000_000, `MONOTONIC_USEC is CLOCK_MONOTONIC (${usec} vs ${reloading.monotonic_usec})`)
  await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 90_000, 'the reload')
  await waitFor(() => {
    const after = n.msgs().slice(before)
    const iReload = after.findIndex((m) => m.fields.RELOADING === '1')
    return after.some((m, i) => i > iReload && m.fields.READY === '1')
  }, 'READY=1 after RELOADING=1', 30_000)

  p.child.kill('SIGTERM')
  await p.waitForExit(60_000)
  await waitFor(() => n.msgs().find((m) => m.fields.STOPPING === '1'), 'STOPPING=1', 30_000)
})

test('sd_notify: a cluster whose workers cannot start never says READY=1', { skip: await has('systemd-notify') ? undefined : 'no systemd-notify' }, async (t) => {
  const dir = private0700(t)
  const n = await notifyListener(t, dir)
  const port = await freePort()
  const p = spawnProcess(process.execPath, [fixturePath('throws-app.mjs')], { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_CONTROL: join(dir, 'c.sock'), NOTIFY_SOCKET: n.path, FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 10, maxDelay: 10 } }) } })
  t.after(() => p.cleanup())
  const { code } = await p.waitForExit(120_000)
  assert.equal(code, 1)
  // systemd-notify runs are awaited in order; one more round for any in flight
  await new Promise((resolve) => execFile('systemd-notify', ['--help'], resolve))
  assert.equal(n.msgs().filter((m) => m.fields.READY === '1').length, 0, JSON.stringify(n.msgs()))
})

test('sd_notify across nclust upgrade: the new primary says MAINPID=<its pid> and READY=1; the old one never says STOPPING=1', { skip: await has('systemd-notify') ? undefined : 'no systemd-notify' }, async (t) => {
  const dir = private0700(t)
  const n = await notifyListener(t, dir)
  const port = await freePort()
  const control = join(dir, 'c.sock')
  const p = spawnProcess(process.execPath, [fixture], { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_CONTROL: control, NOTIFY_SOCKET: n.path } })
  t.after(() => p.cleanup())
  await waitFor(() => n.msgs().find((m) => m.fields.READY === '1'), 'READY=1', 90_000)
  const up = await new Promise<{ code: number, out: string }>((resolve) => execFile(process.execPath, [bin, 'upgrade', '--control', control], (err, so, se) => resolve({ code: err === null ? 0 : 1, out: so + se })))
  assert.equal(up.code, 0, up.out)
  const newPid = Number(/pid (\d+)/.exec(up.out)?.[1])
  p.track(newPid)
  const main = await waitFor(() => n.msgs().find((m) => m.fields.MAINPID !== undefined), 'MAINPID=', 30_000)
  assert.equal(Number(main.fields.MAINPID), newPid)
  assert.equal(main.sender, newPid)
  assert.equal(main.fields.READY, '1')
  await p.waitForExit(60_000)
  assert.ok(isAlive(newPid))
  assert.equal(n.msgs().filter((m) => m.fields.STOPPING === '1').length, 0, 'the old primary did not stop the unit')
  assert.equal((await get(port, '/')).status, 200)
})
