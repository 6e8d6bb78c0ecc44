import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, distinct, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { fixturePath, isEvent, primaryReady } from './start-cluster.ts'

/** The fixture's throwing frame: present in the error's stack, and nowhere else. */
const STACK_FRAME = /at alwaysThrows \(file:/g
/** What the cluster printed, without the fixture's event lines (the start-failed event carries the stack too). */
const clusterOutput = (p: Spawned): string => p.output().split('\n').filter((line) => !line.startsWith('{"role":"event"')).join('\n')

test('a buildApp that always throws: a short line per try, the stack once, exit 1 within seconds', async (t) => {
  const port = await freePort()
  const backoff = { initialDelay: 100, maxDelay: 1000 }
  const startRetries = 2
  const p = spawnNode(fixturePath('throws-app.mjs'), {
    env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: backoff }), START_RETRIES: String(startRetries) }
  })
  t.after(() => p.cleanup())
  const t0 = Date.now()
  const { code } = await p.waitForExit(60000)
  const ms = Date.now() - t0
  assert.equal(code, 1)
  // Bound from the options: 3 tries, each a boot (under 5 s even on a loaded 2-core machine), and the delays between them.
  const tries = startRetries + 1
  const bound = tries * 5000 + backoff.initialDelay * (2 ** startRetries - 1)
  t.diagnostic(`exit 1 after ${ms} ms (bound ${bound} ms), ${p.output().split('\n').length} output lines`)
  assert.ok(ms < bound, `exit within ${bound} ms (took ${ms})`)

  const out = clusterOutput(p)
  assert.equal((out.match(STACK_FRAME) ?? []).length, 1, `the stack is printed exactly once:\n${out}`)
  const verdict = p.lines.filter((l) => l.level === 60)
  assert.equal(verdict.length, 1, 'one fatal line')
  assert.match(String(verdict[0]!.msg), /^worker \d could not start \(3 tries, start-failed\): buildApp always throws \(fixture\); stopping the cluster, exit 1$/)
  assert.match(String((verdict[0]!.err as { stack: string }).stack), /^Error: buildApp always throws \(fixture\)\n {4}at /)
  // One short line per failed try, without the stack; the slot that tripped shows tries 1 and 2.
  const failedSlot = verdict[0]!.workerId
  const tryLines = p.lines.filter((l) => l.workerId === failedSlot && typeof l.msg === 'string' && l.msg.startsWith(`worker ${String(failedSlot)} did not start`))
  assert.deepEqual(tryLines.map((l) => l.try), [1, 2])
  for (const l of tryLines) assert.match(String(l.msg), /\(try \d of 3, start-failed\): buildApp always throws \(fixture\); retrying in \d+ms$/)
  assert.equal(p.lines.filter(isEvent('crash-loop')).length, 0)
  assert.equal(p.lines.filter((l) => l.role === 'worker' && l.level !== undefined && l.level >= 50).length, 0, 'workers print no error lines of their own')
})

test('a buildApp that fails twice (a database coming up late) then succeeds: the cluster serves', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-verdict-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const counter = join(dir, 'counter')
  const port = await freePort()
  const p = spawnNode(fixturePath('fails-first-starts-app.mjs'), {
    // Each slot counts its own tries: tries 1 and 2 fail, try 3 (the last allowed by default) succeeds.
    env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', FIXTURE_FAIL_TIMES: '2', FIXTURE_COUNTER: counter, FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 100 } }) }
  })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, 'both slots ready', 60000)
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2)
  assert.equal(seen.size, 2)
  const tries = p.lines.filter((l) => typeof l.msg === 'string' && / did not start \(try \d of 3, start-failed\): database not up yet/.test(l.msg))
  assert.deepEqual(tries.map((l) => `${String(l.workerId)}:${String(l.try)}`).sort(), ['0:1', '0:2', '1:1', '1:2'], 'two failed tries per slot')
  assert.equal(p.lines.filter((l) => l.level === 60).length, 0)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('single-process mode: a failing buildApp prints the error once with its stack and exits 1', async (t) => {
  const p = spawnNode(fixturePath('throws-app.mjs'), { env: { WORKER_COUNT: '1', PORT: String(await freePort()), HOST: '127.0.0.1' } })
  t.after(() => p.cleanup())
  assert.equal((await p.waitForExit(30000)).code, 1)
  const out = clusterOutput(p)
  assert.equal((out.match(STACK_FRAME) ?? []).length, 1, `the stack is printed exactly once:\n${out}`)
  assert.ok(p.lines.some((l) => l.level === 60 && l.msg === 'could not start: buildApp always throws (fixture); exit 1'))
})
