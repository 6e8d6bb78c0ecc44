// The reaper's script on its own (src/primary/reaper.ts), with real processes: what it kills when its
// stdin closes, what it never kills, and what it costs. The cluster case (a blocked worker after a
// kill -9 of its primary) is the fault matrix's 'watchdog, blocked x kill-9' cell.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { isAlive, waitFor } from '../../../test/helpers/index.ts'
import { REAPER_SCRIPT, startTime } from '../src/primary/reaper.ts'

const linux = process.platform === 'linux'

function reaper (grace: string): ChildProcess {
  return spawn('/bin/sh', ['-c', REAPER_SCRIPT, 'nclust-reaper', grace], { stdio: ['pipe', 'ignore', 'inherit'] })
}
const sleepers = new Map<number, ChildProcess>()
function sleeper (t: { after: (fn: () => void) => void }): number {
  const c = spawn('sleep', ['600'], { stdio: 'ignore' })
  t.after(() => { c.kill('SIGKILL') })
  sleepers.set(c.pid as number, c)
  return c.pid as number
}
/** The signal that ended our child `pid` (its exit is reaped by us: a zombie still answers kill 0). */
const endedBy = async (pid: number): Promise<NodeJS.Signals | null> => {
  const c = sleepers.get(pid) as ChildProcess
  await waitFor(() => c.exitCode !== null || c.signalCode !== null, `process ${pid} to end`, 10000)
  return c.signalCode
}
const exited = (c: ChildProcess): Promise<number | null> => new Promise((resolve) => {
  if (c.exitCode !== null) resolve(c.exitCode)
  else c.once('exit', (code) => resolve(code))
})

test('at end of input, after the grace, it SIGKILLs the listed processes that are still the same; never a pid whose start time differs, nor one reported gone', { skip: !linux }, async (t) => {
  const listed = sleeper(t)
  const gone = sleeper(t)
  const reused = sleeper(t) // stands for a pid the kernel gave to another process: recorded start time differs
  const r = reaper('0.5')
  t.after(() => { r.kill('SIGKILL') })
  r.stdin?.write(`+ ${listed} ${startTime(listed) ?? ''}\n+ ${gone} ${startTime(gone) ?? ''}\n+ ${reused} 1\n- ${gone}\n`)
  // SIGTERM/SIGINT/SIGHUP are ignored: a Ctrl-C to the group does not take the reaper first.
  await waitFor(() => readFileSync(`/proc/${r.pid ?? 0}/status`, 'utf8').match(/^SigIgn:\s*([0-9a-f]+)/m)?.[1] !== '0000000000000000', 'the reaper ignoring signals', 10000)
  r.kill('SIGTERM')
  r.stdin?.end()
  assert.equal(await exited(r), 0)
  assert.equal(await endedBy(listed), 'SIGKILL', 'the listed process was killed')
  assert.ok(isAlive(gone), 'a process reported gone (its pid may be someone else\'s now) is left alone')
  assert.ok(isAlive(reused), 'a pid with another start time is left alone')
})

test('with nothing listed at end of input (a primary that exited normally) it exits at once; its memory', { skip: !linux }, async (t) => {
  const r = reaper('600')
  t.after(() => { r.kill('SIGKILL') })
  const pid = sleeper(t)
  r.stdin?.write(`+ ${pid} ${startTime(pid) ?? ''}\n`)
  await waitFor(() => /^VmRSS:/m.test(readFileSync(`/proc/${r.pid ?? 0}/status`, 'utf8')), 'the reaper running', 10000)
  const rssKb = Number(readFileSync(`/proc/${r.pid ?? 0}/status`, 'utf8').match(/^VmRSS:\s*(\d+)/m)?.[1])
  t.diagnostic(`the reaper (/bin/sh -> ${readFileSync(`/proc/${r.pid ?? 0}/comm`, 'utf8').trim()}) waiting on read: ${rssKb} kB RSS`)
  assert.ok(rssKb > 0 && rssKb < 8 * 1024, `a few MB at most (${rssKb} kB)`)
  r.stdin?.write(`- ${pid}\n`)
  r.stdin?.end()
  // 600 s of grace would be waited if anything were still listed: the exit comes well before.
  await waitFor(() => r.exitCode !== null, 'the reaper to exit', 20000)
  assert.equal(r.exitCode, 0)
  assert.ok(isAlive(pid))
})
