/**
 * The one shared helper for tests that start real processes: spawn a fixture, read its JSON log
 * lines, wait for a condition (never a bare sleep), and kill everything it started when the test
 * ends, pass or fail, including the workers of a primary that was SIGKILLed.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { request as undiciRequest, Agent } from 'undici'

export interface LogLine { msg?: string, level?: number, role?: string, workerId?: number | null, pid?: number, workerPid?: number, [k: string]: unknown }

export interface Spawned {
  child: ChildProcess
  pid: number
  /** Parsed JSON log lines seen so far (stdout); non-JSON lines are kept as `{ msg: raw }`. */
  lines: LogLine[]
  /** Raw stdout + stderr text. */
  output: () => string
  stderr: () => string
  waitForLine: (pred: (l: LogLine) => boolean, timeoutMs?: number, what?: string) => Promise<LogLine>
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  waitForExit: (timeoutMs?: number) => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Every pid this process (or its workers) logged: killed on cleanup. */
  knownPids: () => number[]
  /** Add pids learned another way (grandchildren that log nothing, e.g. a database server): killed on cleanup too. */
  track: (...pids: number[]) => void
  cleanup: () => Promise<void>
}

const live = new Set<Spawned>()

function killAll (): void {
  for (const s of live) {
    for (const pid of s.knownPids()) { try { process.kill(pid, 'SIGKILL') } catch {} }
  }
}
/** Kill everything still running when the test process ends, however it ends. */
process.on('exit', killAll)
// A signal (the runner's file timeout sends SIGTERM) skips 'exit' handlers: kill what we started,
// then die of the same signal as we would have.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killAll()
    process.kill(process.pid, signal)
  })
}

/** True while `pid` runs. A zombie (exited, not yet reaped by its new parent) counts as gone. */
export function isAlive (pid: number): boolean {
  try { process.kill(pid, 0) } catch { return false }
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return true }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Poll `fn` until it returns a value other than undefined, null or false (or resolves to one); throws
 * with `what` after `timeoutMs`. The value is returned, so `cond && value` hands back `value`.
 */
export async function waitFor<T> (fn: () => T | Promise<T>, what: string, timeoutMs = 60_000, intervalMs = 50): Promise<Exclude<NonNullable<T>, false>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== null && v !== false) return v as Exclude<NonNullable<T>, false>
    } catch (err) { last = err }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last !== undefined ? ` (last error: ${String(last)})` : ''}`)
    await sleep(intervalMs)
  }
}

export interface SpawnOptions {
  env?: Record<string, string | undefined>
  args?: string[]
  /** Own process group, so a test can signal the whole group like a terminal's Ctrl-C. */
  detached?: boolean
  cwd?: string
}

/** Start `node <file>` as a real process with piped output. */
export function spawnNode (file: string, opts: SpawnOptions = {}): Spawned {
  return spawnProcess(process.execPath, [file, ...(opts.args ?? [])], { ...opts, args: [] })
}

/**
 * Start any program (a Prometheus server, say) as a tracked process: killed on cleanup and when the
 * test process ends, like the Node fixtures. JSON stdout lines are parsed the same way.
 */
export function spawnProcess (command: string, argv: string[], opts: SpawnOptions = {}): Spawned {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries({ ...process.env, LOG_LEVEL: 'info', ...opts.env })) {
    if (v !== undefined) env[k] = v
  }
  // The test runner's loader and its test-runner env must not leak into the fixture.
  delete env.NODE_OPTIONS
  delete env.NODE_TEST_CONTEXT
  const child = spawn(command, [...argv, ...(opts.args ?? [])], {
    env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.detached ?? false
  })
  const lines: LogLine[] = []
  const pids = new Set<number>()
  if (child.pid !== undefined) pids.add(child.pid)
  let out = ''
  let err = ''
  const waiters = new Set<() => void>()
  let buf = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk
    buf += chunk
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const raw = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (raw.trim() === '') continue
      let line: LogLine
      try { line = JSON.parse(raw) as LogLine } catch { line = { msg: raw } }
      for (const p of [line.pid, line.workerPid]) if (typeof p === 'number') pids.add(p)
      lines.push(line)
    }
    for (const w of waiters) w()
  })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { err += chunk; for (const w of waiters) w() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => { for (const w of waiters) w(); resolve({ code, signal }) })
  })
  let exitState: { code: number | null, signal: NodeJS.Signals | null } | undefined
  void exited.then((s) => { exitState = s })

  const spawned: Spawned = {
    child,
    pid: child.pid ?? -1,
    lines,
    output: () => out + err,
    stderr: () => err,
    exited,
    knownPids: () => [...pids],
    track: (...more) => { for (const p of more) pids.add(p) },
    async waitForLine (pred, timeoutMs = 60_000, what = 'a log line') {
      const found = lines.find(pred)
      if (found !== undefined) return found
      return await new Promise<LogLine>((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}; output:\n${(out + err).slice(-4000)}`)) }, timeoutMs)
        const check = (): void => {
          const l = lines.find(pred)
          if (l !== undefined) { clearTimeout(timer); waiters.delete(check); resolve(l); return }
          if (exitState !== undefined) { clearTimeout(timer); waiters.delete(check); reject(new Error(`process exited (${JSON.stringify(exitState)}) before ${what}; output:\n${(out + err).slice(-4000)}`)) }
        }
        waiters.add(check)
        check()
      })
    },
    async waitForExit (timeoutMs = 30000) {
      let timer: NodeJS.Timeout | undefined
      try {
        return await Promise.race([exited, new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`process ${child.pid ?? '?'} did not exit within ${timeoutMs}ms; output:\n${(out + err).slice(-4000)}`)), timeoutMs)
        })])
      } finally { clearTimeout(timer) }
    },
    async cleanup () {
      for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
      if (exitState === undefined) await Promise.race([exited, sleep(5000)])
      live.delete(spawned)
    }
  }
  live.add(spawned)
  return spawned
}

/** One HTTP request on a fresh connection (so the cluster's round-robin sees a new connection each time). */
export async function get (port: number, path = '/', opts: { timeout?: number, headers?: Record<string, string> } = {}): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: string, json: () => any }> {
  const dispatcher = new Agent({ connections: 1, pipelining: 0, connect: { timeout: opts.timeout ?? 10000 } })
  try {
    const res = await undiciRequest(`http://127.0.0.1:${port}${path}`, {
      dispatcher, headersTimeout: opts.timeout ?? 30000, bodyTimeout: opts.timeout ?? 30000, ...(opts.headers ? { headers: opts.headers } : {})
    })
    const body = await res.body.text()
    return { status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body) }
  } finally {
    await dispatcher.close()
  }
}

/**
 * Collect distinct values of `key(response)` over fresh connections until `count` are seen. Any
 * answer other than 200 throws (it is never dropped before the test sees it), and so does reaching
 * `maxRequests` without `count` distinct values.
 */
export async function distinct<T> (port: number, path: string, key: (body: any) => T, count: number, maxRequests = 200): Promise<Set<T>> {
  const seen = new Set<T>()
  for (let i = 0; i < maxRequests && seen.size < count; i++) {
    const r = await get(port, path)
    if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status} (request ${i + 1}): ${r.body.slice(0, 500)}`)
    seen.add(key(r.json()))
  }
  if (seen.size < count) throw new Error(`only ${seen.size} distinct of ${count} after ${maxRequests} requests to ${path}: ${JSON.stringify([...seen])}`)
  return seen
}
