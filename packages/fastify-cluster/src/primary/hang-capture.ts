import cluster from 'node:cluster'
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ResolvedOptions } from '../options.js'

// node:http by require(), not an ESM import: on Node 22+ an ESM import of node:http loads undici and
// perf_hooks into the lean primary (the pidmetrics exposition test checks it), as cluster-metrics.ts does.
const { get } = createRequire(import.meta.url)('node:http') as typeof import('node:http')
import { REPORT_EXPRESSION, ensureReportDirectory, hangReportName, pruneReports, redactReport, type ProbeReply } from '../probe.js'

/**
 * `hangProbe: 'on-hang'` (the default): the stack of a hung worker, taken by the primary through the
 * worker's own inspector, started only once the worker is declared hung. Nothing runs in an idle
 * worker: no thread, no inspector, no port (workers are forked with {@link INSPECT_PORT_ARG}, which
 * only sets the port a later activation uses: measured, it costs no memory; see bench/worker-rss.mjs).
 *
 *   1. SIGUSR1 to the hung worker. Node handles it off the main thread (its inspector signal thread),
 *      so the inspector starts even though the event loop is blocked, on 127.0.0.1 and a port the
 *      kernel picks (port 0: never taken, never the same for two workers).
 *   2. The port is found in /proc: the listening TCP socket of the worker (an inode among its open
 *      files, /proc/<pid>/fd) that was not there before the signal (/proc/<pid>/net/tcp{,6}). Node
 *      prints it only to the worker's stderr, which the primary does not read.
 *   3. GET /json/list on it, a WebSocket to the target (the `ws` package: Node 20 has no global
 *      WebSocket), `Debugger.enable`, `Debugger.pause`: the inspector interrupts the running
 *      JavaScript, `Debugger.paused` carries the call frames (function, url, line, column).
 *   4. In the paused top frame, a diagnostic report is taken (`process.report.getReport()`, without
 *      environment values), and the primary writes it.
 *   5. The caller (the watchdog) SIGKILLs the worker, which closes the port.
 *
 * The whole capture is bounded by a deadline; the port is open from step 1 to step 5 only. During
 * that window any local user who finds the port can attach a debugger to the worker (run code as
 * its user): see the package README, "Hang watchdog", for the figure and why it is the default.
 *
 * Linux only (/proc). Elsewhere, or when the app handles SIGUSR1 itself, the capture fails with a
 * reason and the worker is killed without a stack (`hangProbe: 'always'` works everywhere).
 */

/** Added in front of the workers' execArgv: a later `--inspect-port` of the operator's wins. */
export const INSPECT_PORT_ARG = '--inspect-port=127.0.0.1:0'

/**
 * Fork every later worker with {@link INSPECT_PORT_ARG} (starts nothing by itself). node:cluster sees
 * an inspector flag in execArgv and appends its own `--inspect-port=<9229 + n>` (one more per fork:
 * ports that may be taken, and that two clusters on a host share): `inspectPort: 0` makes it append
 * port 0 instead, and the host stays 127.0.0.1. A primary that itself runs with `--inspect` (someone
 * debugging) is left to node:cluster's own numbering; the capture then finds no new port.
 */
export function armInspectorCapture (): void {
  if (process.platform !== 'linux') return // the port is found in /proc: see captureStack
  const current = cluster.settings.execArgv ?? process.execArgv
  if (current.includes(INSPECT_PORT_ARG) || current.some((a) => /^--(inspect|debug)/.test(a))) return
  cluster.setupPrimary({ execArgv: [INSPECT_PORT_ARG, ...current], ...(cluster.settings.inspectPort === undefined ? { inspectPort: 0 } : {}) })
}

/** A listening TCP socket: its inode and where it listens. */
export interface Listening { inode: string, host: string, port: number }

/**
 * The sockets in LISTEN state of a /proc/<pid>/net/tcp or tcp6 table whose inode is in `inodes`.
 * Addresses are little-endian hex per 32-bit word (as the kernel prints them); an IPv6 or wildcard
 * address is read as loopback, where the inspector also answers.
 */
export function parseListening (table: string, inodes: ReadonlySet<string>): Listening[] {
  const out: Listening[] = []
  for (const line of table.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols.length < 10 || cols[3] !== '0A') continue
    const inode = cols[9] ?? ''
    if (!inodes.has(inode)) continue
    const [addr = '', portHex = ''] = (cols[1] ?? '').split(':')
    const port = parseInt(portHex, 16)
    if (!Number.isInteger(port) || port <= 0) continue
    let host = '127.0.0.1'
    if (addr.length === 8) {
      const ip = [6, 4, 2, 0].map((i) => parseInt(addr.slice(i, i + 2), 16)).join('.')
      if (ip !== '0.0.0.0') host = ip
    } else if (addr.length === 32 && addr !== '0'.repeat(32)) {
      host = addr === '00000000000000000000000001000000' ? '[::1]' : '127.0.0.1'
    }
    out.push({ inode, host, port })
  }
  return out
}

/** The listening TCP sockets a process holds (Linux /proc; a process of the same user). */
export function listeningSockets (pid: number): Listening[] {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m?.[1] !== undefined) inodes.add(m[1])
    } catch {} // closed meanwhile
  }
  const out: Listening[] = []
  for (const table of ['tcp', 'tcp6']) {
    let text: string
    try { text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8') } catch { continue }
    out.push(...parseListening(text, inodes))
  }
  return out
}

interface CdpFrame { functionName: string, url?: string, callFrameId: string, location: { scriptId: string, lineNumber: number, columnNumber: number } }

/** A frame as a line of a JS stack: `at fn (url:line:column)`, 1-based like Node's stacks. */
export function frameLine (f: CdpFrame, urls: ReadonlyMap<string, string>): string {
  const url = f.url !== undefined && f.url !== '' ? f.url : urls.get(f.location.scriptId) ?? `<script ${f.location.scriptId}>`
  return `at ${f.functionName !== '' ? f.functionName : '<anonymous>'} (${url}:${f.location.lineNumber + 1}:${f.location.columnNumber + 1})`.slice(0, 500)
}

/**
 * GET a small JSON document (node:http, not fetch: undici's first load measured up to 0.5 s on a loaded
 * machine, inside the inspector window). At most 1 MiB is read.
 */
function getJson (url: string, timeout: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => { size += c.length; if (size > 1 << 20) req.destroy(new Error(`${url}: answer over 1 MiB`)); else chunks.push(c) })
      res.on('end', () => { try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))) } catch (err) { reject(err instanceof Error ? err : new Error(String(err))) } })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within ${timeout}ms`)))
    req.on('error', reject)
  })
}

/** What {@link captureStack} found: the frames, the report's text, and how long the inspector was open. */
export interface Capture { frames: string[], reportText?: string, error?: string, inspectorMs: number, inspectorPort?: number }

/**
 * Start the hung worker's inspector and read where its loop is stuck; never rejects, never takes
 * longer than `timeout` ms (then it answers with what it has and why). The caller kills the worker.
 */
export async function captureStack (pid: number, timeout: number): Promise<Capture> {
  const t0 = performance.now()
  const frames: string[] = []
  let reportText: string | undefined
  let close = (): void => {}
  let inspectorPort: number | undefined
  const work = (async (): Promise<string | undefined> => {
    if (process.platform !== 'linux') return 'hangProbe "on-hang" needs Linux (/proc); use hangProbe "always" here'
    const before = new Set(listeningSockets(pid).map((s) => s.inode))
    process.kill(pid, 'SIGUSR1')
    let target: Listening | undefined
    while (target === undefined) {
      if (performance.now() - t0 > timeout) return 'the inspector opened no port (does the app handle SIGUSR1, or run with --disable-sigusr1?)'
      await sleep(10)
      target = listeningSockets(pid).find((s) => !before.has(s.inode))
    }
    inspectorPort = target.port
    const base = `http://${target.host}:${target.port}`
    const left = (): number => Math.max(1, Math.ceil(timeout - (performance.now() - t0)))
    const list = await getJson(`${base}/json/list`, left()) as Array<{ webSocketDebuggerUrl?: unknown }>
    const wsUrl = list[0]?.webSocketDebuggerUrl
    if (typeof wsUrl !== 'string' || !wsUrl.startsWith(`ws://${target.host}:${target.port}/`)) return 'the inspector listed no target'
    // Loaded only here, at a hang: the idle primary never loads it.
    const { default: WebSocket } = await import('ws')
    const ws = new WebSocket(wsUrl, { maxPayload: 64 * 1024 * 1024, perMessageDeflate: false })
    close = () => { try { ws.terminate() } catch {} }
    const urls = new Map<string, string>()
    const replies = new Map<number, (m: { result?: unknown, error?: { message?: string } }) => void>()
    let onPaused: (frames: CdpFrame[]) => void = () => {}
    const paused = new Promise<CdpFrame[]>((resolve) => { onPaused = resolve })
    let failed: (err: Error) => void = () => {}
    const broken = new Promise<never>((_resolve, reject) => { failed = reject })
    broken.catch(() => {})
    ws.on('error', (err) => failed(err))
    ws.on('close', () => failed(new Error('the inspector closed the connection')))
    ws.on('message', (data) => {
      let m: { id?: number, method?: string, params?: Record<string, unknown>, result?: unknown, error?: { message?: string } }
      try { m = JSON.parse(String(data)) } catch { return }
      if (m.id !== undefined) replies.get(m.id)?.(m)
      else if (m.method === 'Debugger.scriptParsed' && typeof m.params?.scriptId === 'string' && typeof m.params.url === 'string') urls.set(m.params.scriptId, m.params.url)
      else if (m.method === 'Debugger.paused') onPaused((m.params?.callFrames ?? []) as CdpFrame[])
    })
    let seq = 0
    const send = async <T>(method: string, params: object = {}): Promise<T> => {
      const id = ++seq
      const reply = new Promise<T>((resolve, reject) => {
        replies.set(id, (m) => { if (m.error !== undefined) reject(new Error(`${method}: ${m.error.message ?? 'failed'}`)); else resolve(m.result as T) })
      })
      ws.send(JSON.stringify({ id, method, params }))
      return await Promise.race([reply, broken])
    }
    await Promise.race([new Promise((resolve) => ws.once('open', resolve)), broken])
    await send('Debugger.enable')
    await send('Debugger.pause')
    const callFrames = await Promise.race([paused, broken])
    for (const f of callFrames.slice(0, 8)) frames.push(frameLine(f, urls))
    const top = callFrames[0]
    if (top === undefined) return 'paused outside JavaScript: no frames'
    const res = await send<{ result: { value?: unknown }, exceptionDetails?: unknown }>('Debugger.evaluateOnCallFrame', {
      callFrameId: top.callFrameId, expression: REPORT_EXPRESSION, silent: true, returnByValue: true
    }).catch(() => undefined)
    if (res !== undefined && res.exceptionDetails === undefined && typeof res.result.value === 'string') reportText = res.result.value
    return reportText === undefined ? 'the report could not be taken in the paused frame' : undefined
  })().catch((err: unknown) => err instanceof Error ? err.message : String(err))
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<string>((resolve) => { timer = setTimeout(() => resolve(`no stack within ${timeout}ms`), timeout) })
  const error = await Promise.race([work, deadline])
  clearTimeout(timer)
  close()
  return { frames, ...(reportText !== undefined ? { reportText } : {}), ...(error !== undefined ? { error } : {}), inspectorMs: Math.round(performance.now() - t0), ...(inspectorPort !== undefined ? { inspectorPort } : {}) }
}

/**
 * Write a hang report privately (0600, created exclusively, in the checked report folder), with the
 * frames the primary read on top and no environment values; then cap the folder (see `pruneReports`).
 */
export function writeHangReport (options: Pick<ResolvedOptions, 'reportDirectory' | 'reportDirectoryIsDefault' | 'reportMaxFiles' | 'reportMaxBytes'>,
  pid: number, text: string, frames: string[]): { report?: string, error?: string } {
  let file: string | undefined
  try {
    const report = JSON.parse(text) as Record<string, unknown>
    redactReport(report)
    ensureReportDirectory(options.reportDirectory, options.reportDirectoryIsDefault)
    file = join(options.reportDirectory, hangReportName(pid, Date.now()))
    writeFileSync(file, JSON.stringify({ nclustHang: { pid, frames }, ...report }, null, 2), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    return { error: `report not written: ${err instanceof Error ? err.message : String(err)}` }
  }
  pruneReports(options.reportDirectory, { maxFiles: options.reportMaxFiles, maxBytes: options.reportMaxBytes })
  return { report: file }
}

/** The watchdog's one call: capture, write the report, answer as the probe thread does (plus the inspector's open time). */
export async function captureHungWorker (pid: number, timeout: number, options: ResolvedOptions): Promise<ProbeReply & { inspectorMs: number, inspectorPort?: number }> {
  const c = await captureStack(pid, timeout)
  const written = c.reportText !== undefined ? writeHangReport(options, pid, c.reportText, c.frames) : {}
  const error = written.error ?? c.error
  return { frames: c.frames, ...(written.report !== undefined ? { report: written.report } : {}), ...(error !== undefined ? { error } : {}), inspectorMs: c.inspectorMs, ...(c.inspectorPort !== undefined ? { inspectorPort: c.inspectorPort } : {}) }
}
