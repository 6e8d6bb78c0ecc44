/**
 * Runs in a worker_thread of each cluster worker, so it answers while the main thread's event loop
 * is blocked. On a connection to its unix socket (the primary's watchdog), it attaches the
 * inspector to the main thread, pauses it where it is stuck, has it write a Node.js diagnostic
 * report from that very frame (so the report's `javascriptStack` is the blocked loop's stack),
 * resumes, and answers with the report's path and the top frames.
 *
 * Node's own `--report-on-signal` cannot do this: its signal handler is JavaScript and never runs
 * while the loop is blocked. The inspector's messages to the main thread interrupt running JS.
 */
import { createServer } from 'node:net'
import { unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { Session } from 'node:inspector'
import { workerData } from 'node:worker_threads'
import type { ProbeReply } from '../probe.js'

const { socketPath, directory } = workerData as { socketPath: string, directory: string }

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
    if (top !== undefined) {
      const file = join(directory, `report.nclust-hung.${process.pid}.${Date.now()}.json`)
      const res = await post<{ result: { value?: unknown }, exceptionDetails?: unknown }>(session, 'Debugger.evaluateOnCallFrame', {
        callFrameId: top.callFrameId,
        expression: `globalThis.process.report.writeReport(${JSON.stringify(file)})`,
        silent: true,
        returnByValue: true
      })
      if (res.exceptionDetails === undefined && typeof res.result.value === 'string') {
        reply = { report: res.result.value, frames: await framesOf(res.result.value, reply.frames) }
      }
    }
    await post(session, 'Debugger.resume').catch(() => {})
    await post(session, 'Debugger.disable').catch(() => {})
    return reply
  } finally {
    session.disconnect()
  }
}

/** The report's JS stack, minus the two frames of the evaluation that wrote it. */
async function framesOf (file: string, fallback: string[]): Promise<string[]> {
  try {
    const { readFile } = await import('node:fs/promises')
    const report = JSON.parse(await readFile(file, 'utf8')) as { javascriptStack?: { stack?: string[] } }
    const stack = report.javascriptStack?.stack ?? []
    const evalAt = stack.findIndex((l) => l.startsWith('at eval ('))
    const frames = stack.slice(evalAt + 1, evalAt + 9)
    return frames.length > 0 ? frames : fallback
  } catch { return fallback }
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
