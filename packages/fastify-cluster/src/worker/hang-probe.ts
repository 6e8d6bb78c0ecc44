/**
 * `hangProbe: 'always'`: runs in a worker_thread of each cluster worker, so it answers while the main thread's event loop
 * is blocked. On a connection to its unix socket (the primary's watchdog), it attaches the
 * inspector to the main thread, pauses it where it is stuck, has it take a Node.js diagnostic
 * report from that very frame (so the report's `javascriptStack` is the blocked loop's stack),
 * resumes, writes the report (mode 0600, environment values removed) and answers with the
 * report's path and the top frames.
 *
 * Node's own `--report-on-signal` cannot do this: its signal handler is JavaScript and never runs
 * while the loop is blocked. The inspector's messages to the main thread interrupt running JS.
 */
import { createServer } from 'node:net'
import { unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Session } from 'node:inspector'
import { workerData } from 'node:worker_threads'
import { REPORT_EXPRESSION, ensureReportDirectory, hangReportName, redactReport, type ProbeReply } from '../probe.js'

const { socketPath, directory, defaultDirectory } = workerData as { socketPath: string, directory: string, defaultDirectory: boolean }

function post<T = unknown> (session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params, (err: Error | null, result?: unknown) => { if (err !== null) reject(err); else resolve(result as T) })
  })
}

interface CallFrame { callFrameId: string, functionName: string, location: { lineNumber: number, columnNumber: number } }

async function capture (): Promise<ProbeReply> {
  const session = new Session()
  session.connectToMainThread()
  try {
    const paused = new Promise<CallFrame[]>((resolve) => {
      session.once('Debugger.paused', (m) => resolve((m.params as { callFrames: CallFrame[] }).callFrames))
    })
    await post(session, 'Debugger.enable')
    await post(session, 'Debugger.pause')
    const callFrames = await paused
    const top = callFrames[0]
    let reply: ProbeReply = { frames: callFrames.slice(0, 8).map((f) => `at ${f.functionName || '<anonymous>'} (line ${f.location.lineNumber + 1})`) }
    let text: string | undefined
    if (top !== undefined) {
      const res = await post<{ result: { value?: unknown }, exceptionDetails?: unknown }>(session, 'Debugger.evaluateOnCallFrame', {
        callFrameId: top.callFrameId, expression: REPORT_EXPRESSION, silent: true, returnByValue: true
      }).catch(() => undefined)
      if (res !== undefined && res.exceptionDetails === undefined && typeof res.result.value === 'string') text = res.result.value
    }
    await post(session, 'Debugger.resume').catch(() => {})
    await post(session, 'Debugger.disable').catch(() => {})
    // The loop is running again (and will be killed): the writing happens here, off the main thread.
    if (text !== undefined) reply = write(text, reply.frames)
    return reply
  } finally {
    session.disconnect()
  }
}

/** Write the report privately: a 0600 file created exclusively in a folder only this user can write to. */
function write (text: string, fallback: string[]): ProbeReply {
  const report = JSON.parse(text) as { javascriptStack?: { stack?: string[] }, environmentVariables?: unknown, workers?: unknown }
  redactReport(report)
  // The report's JS stack, minus the frames of the evaluation that took it.
  const stack = report.javascriptStack?.stack ?? []
  const evalAt = stack.findIndex((l) => l.startsWith('at eval ('))
  const found = stack.slice(evalAt + 1, evalAt + 9).map((f) => f.slice(0, 500))
  const frames = found.length > 0 ? found : fallback
  const file = join(directory, hangReportName(process.pid, Date.now()))
  try {
    ensureReportDirectory(directory, defaultDirectory)
    writeFileSync(file, JSON.stringify(report, null, 2), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    return { frames, error: `report not written: ${err instanceof Error ? err.message : String(err)}` }
  }
  return { report: file, frames }
}

try { unlinkSync(socketPath) } catch {}
let busy = false
createServer((socket) => {
  socket.on('error', () => {})
  if (busy) { socket.end(JSON.stringify({ frames: [], error: 'a capture is already running' }) + '\n'); return }
  busy = true
  capture().then(
    (reply) => socket.end(JSON.stringify(reply) + '\n'),
    (err: unknown) => socket.end(JSON.stringify({ frames: [], error: err instanceof Error ? err.message : String(err) }) + '\n')
  ).finally(() => { busy = false })
}).listen(socketPath)
