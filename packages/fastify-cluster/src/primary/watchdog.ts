import { connect } from 'node:net'
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SlotMachine, Proc } from './slots.js'
import { PROBE_ANSWER_LIMIT, PROBE_DIR_ENV, parseProbeReply, probeSocketPath, type ProbeReply } from '../probe.js'
import { isHung, watchdogTick } from './policy.js'
import { armInspectorCapture, captureHungWorker } from './hang-capture.js' // hang capture (issue 28)
import { pruneReports } from '../probe.js' // hang capture (issue 28)

/** How long the watchdog waits for a hung worker's stack before it kills it anyway, ms. */
export const PROBE_TIMEOUT = 5000

/**
 * The hang watchdog. Every ready worker beats from its event loop (see worker.ts); one silent past
 * `heartbeatTimeout` is hung. In order: take it out of the round-robin at once (new connections go
 * to the others), ask its hang probe for the blocked loop's stack (a diagnostic report), log the
 * report's path and the top frames, SIGKILL it. Its exit carries the reason `hung` and goes through
 * the slot machine's usual backoff, restart and crash-loop guard.
 */
export function startWatchdog (m: SlotMachine): { stop: () => void } {
  const { heartbeatTimeout, heartbeatInterval } = m.options
  if (heartbeatTimeout === 0) return { stop () {} }
  // The probes' sockets: a fresh 0700 folder with an unguessable name (no other local user can create
  // or take a socket in it first), handed to the workers forked from then on through their env: a
  // worker with it runs the probe thread. `always`: from the start; `after-hang`: from the first hang.
  let probeDir: string | undefined
  /** Workers forked before the probe was armed: they have none. */
  const unarmed = new Set<number>()
  const arm = (): void => {
    if (probeDir !== undefined || m.options.hangProbe === 'off') return
    for (const p of m.procs.values()) unarmed.add(p.pid)
    try {
      probeDir = mkdtempSync(join(tmpdir(), 'nclust-probe-'))
      process.env[PROBE_DIR_ENV] = probeDir
    } catch (err) {
      m.log.warn({ err }, 'hang probe off: no private folder for its sockets (the watchdog still kills and replaces hung workers)')
    }
  }
  if (m.options.hangProbe === 'always') arm()
  // hang capture (issue 28): 'on-hang' forks workers with an inspect port of 0 (starts nothing).
  if (m.options.hangProbe === 'on-hang') armInspectorCapture()
  const removeDir = (): void => { if (probeDir !== undefined) try { rmSync(probeDir, { recursive: true, force: true }) } catch {} }
  process.once('exit', removeDir)
  // A worker that dies without running its exit handlers (kill -9, a crash in native code) leaves its probe socket behind.
  m.events.on('worker-exit', (e) => {
    unarmed.delete(e.pid)
    if (e.signal !== null && probeDir !== undefined) { try { unlinkSync(probeSocketPath(probeDir, e.pid)) } catch {} }
  })
  const every = Math.min(heartbeatInterval, 1000)
  let previousTick = m.now()
  let baseline = -Infinity
  const timer = setInterval(() => {
    const at = m.now()
    const tick = watchdogTick(previousTick, at, every, baseline)
    if (tick.late) m.log.warn({ lateMs: at - previousTick - every }, `watchdog tick ${at - previousTick}ms after the previous one (due every ${every}ms): the primary did not run; judging no worker on that silence`)
    previousTick = at
    baseline = tick.baseline
    if (tick.late) return
    for (const proc of m.procs.values()) {
      if (proc.state === 'ready' && proc.exitAs === undefined && isHung(proc.lastBeat, at, heartbeatTimeout, baseline)) void onHung(proc, at - proc.lastBeat)
    }
  }, every)
  timer.unref()
  return { stop () { clearInterval(timer); removeDir(); process.removeListener('exit', removeDir) } }

  async function onHung (proc: Proc, silentMs: number): Promise<void> {
    proc.exitAs = 'hung'
    const log = proc.slot.log
    log.error({ workerPid: proc.pid, silentMs, heartbeatTimeout },
      `worker ${proc.slot.id} (pid ${proc.pid}) hung: no heartbeat for ${silentMs}ms; capturing its stack, then SIGKILL`)
    // node:cluster's disconnect() in the primary drops the worker from the round-robin at once; the
    // worker never sees the message (its loop is blocked), which is fine: it is about to be killed.
    try { proc.worker.disconnect() } catch {}
    const t0 = m.now()
    const dir = unarmed.has(proc.pid) ? undefined : probeDir
    // hang capture (issue 28): before SIGKILLing a hung worker, await captureHungWorker(pid, deadline).
    const reply: ProbeReply & { inspectorMs?: number, inspectorPort?: number } = m.options.hangProbe === 'on-hang'
      ? await captureHungWorker(proc.pid, PROBE_TIMEOUT, m.options)
      : dir !== undefined ? await probe(probeSocketPath(dir, proc.pid), PROBE_TIMEOUT) : { frames: [], error: noProbe() }
    if (reply.report !== undefined) pruneReports(m.options.reportDirectory, { maxFiles: m.options.reportMaxFiles, maxBytes: m.options.reportMaxBytes }) // issue 28
    const fields = { workerPid: proc.pid, silentMs, report: reply.report, frames: reply.frames, captureMs: m.now() - t0, error: reply.error, inspectorMs: reply.inspectorMs, inspectorPort: reply.inspectorPort }
    if (reply.report !== undefined) {
      log.error(fields, `hung worker ${proc.slot.id} report: ${reply.report}\n  ${reply.frames.slice(0, 5).join('\n  ')}`)
    } else {
      log.error(fields, `hung worker ${proc.slot.id}: no report (${reply.error ?? 'no answer'})${reply.frames.length > 0 ? `\n  ${reply.frames.slice(0, 5).join('\n  ')}` : ''}`)
    }
    m.events.emit('hung', {
      workerId: proc.slot.id, pid: proc.pid, silentMs, frames: reply.frames, ...(reply.report !== undefined ? { report: reply.report } : {})
    })
    proc.worker.process.kill('SIGKILL')
  }

  function noProbe (): string {
    if (m.options.hangProbe === 'off') return 'no hang probe (hangProbe: off)'
    const first = probeDir === undefined
    arm()
    return first && probeDir !== undefined
      ? 'no hang probe yet (hangProbe: after-hang): every worker forked from now on captures its stack if it hangs'
      : 'no hang probe in this worker (forked before the first hang)'
  }
}

/**
 * Ask a hang probe for its stack; never rejects. Reads at most `limit` bytes of the answer: a probe
 * that says more (or says nothing in time, or something that is not an answer) gets no report, and
 * the worker is killed all the same.
 */
export function probe (socketPath: string, timeout: number, limit = PROBE_ANSWER_LIMIT): Promise<ProbeReply> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    const socket = connect(socketPath)
    const done = (reply: ProbeReply): void => { clearTimeout(timer); socket.destroy(); resolve(reply) }
    const timer = setTimeout(() => done({ frames: [], error: `no answer within ${timeout}ms` }), timeout)
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) { done({ frames: [], error: `answer over ${limit} bytes: ignored` }); return }
      chunks.push(chunk)
    })
    socket.on('end', () => done(parseProbeReply(Buffer.concat(chunks).toString('utf8')) ?? { frames: [], error: 'unreadable answer' }))
    socket.on('error', (err) => done({ frames: [], error: err.message }))
  })
}
