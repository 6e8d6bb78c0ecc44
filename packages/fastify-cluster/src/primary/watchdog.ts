import { connect } from 'node:net'
import { unlinkSync } from 'node:fs'
import type { SlotMachine, Proc } from './slots.js'
import { probeSocketPath, type ProbeReply } from '../probe.js'
import { isHung } from './policy.js'

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
  // A worker that dies without running its exit handlers (kill -9, a crash in native code) leaves its probe socket behind.
  m.events.on('worker-exit', (e) => { if (e.signal !== null) { try { unlinkSync(probeSocketPath(e.pid)) } catch {} } })
  const timer = setInterval(() => {
    const at = m.now()
    for (const proc of m.procs.values()) {
      if (proc.state === 'ready' && proc.exitAs === undefined && isHung(proc.lastBeat, at, heartbeatTimeout)) void onHung(proc, at - proc.lastBeat)
    }
  }, Math.min(heartbeatInterval, 1000))
  timer.unref()
  return { stop () { clearInterval(timer) } }

  async function onHung (proc: Proc, silentMs: number): Promise<void> {
    proc.exitAs = 'hung'
    const log = proc.slot.log
    log.error({ workerPid: proc.pid, silentMs, heartbeatTimeout },
      `worker ${proc.slot.id} (pid ${proc.pid}) hung: no heartbeat for ${silentMs}ms; capturing its stack, then SIGKILL`)
    // node:cluster's disconnect() in the primary drops the worker from the round-robin at once; the
    // worker never sees the message (its loop is blocked), which is fine: it is about to be killed.
    try { proc.worker.disconnect() } catch {}
    const t0 = m.now()
    const reply = await probe(proc.pid, PROBE_TIMEOUT)
    const fields = { workerPid: proc.pid, silentMs, report: reply.report, frames: reply.frames, captureMs: m.now() - t0, error: reply.error }
    if (reply.report !== undefined) {
      log.error(fields, `hung worker ${proc.slot.id} report: ${reply.report}\n  ${reply.frames.slice(0, 5).join('\n  ')}`)
    } else {
      log.error(fields, `hung worker ${proc.slot.id}: no report (${reply.error ?? 'no answer'})`)
    }
    m.events.emit('hung', {
      workerId: proc.slot.id, pid: proc.pid, silentMs, frames: reply.frames, ...(reply.report !== undefined ? { report: reply.report } : {})
    })
    proc.worker.process.kill('SIGKILL')
  }
}

/** Ask a worker's hang probe for its stack; never rejects. */
function probe (pid: number, timeout: number): Promise<ProbeReply> {
  return new Promise((resolve) => {
    let buf = ''
    const socket = connect(probeSocketPath(pid))
    const done = (reply: ProbeReply): void => { clearTimeout(timer); socket.destroy(); resolve(reply) }
    const timer = setTimeout(() => done({ frames: [], error: `no answer within ${timeout}ms` }), timeout)
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { buf += chunk })
    socket.on('end', () => {
      try { done(JSON.parse(buf) as ProbeReply) } catch { done({ frames: [], error: 'unreadable answer' }) }
    })
    socket.on('error', (err) => done({ frames: [], error: err.message }))
  })
}
