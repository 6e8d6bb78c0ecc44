import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import { spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'

const exampleDir = new URL('..', import.meta.url).pathname
const serverJs = join(exampleDir, 'dist', 'server.js')

/** Rebuild dist/ when a source file is newer than dist/server.js, so the test never runs stale code. */
export function ensureBuilt (): void {
  const newest = (dir: string): number => Math.max(0, ...readdirSync(dir).map((name) => {
    const full = join(dir, name)
    const st = statSync(full)
    return st.isDirectory() ? newest(full) : st.mtimeMs
  }))
  if (existsSync(serverJs) && statSync(serverJs).mtimeMs >= newest(join(exampleDir, 'src'))) return
  execFileSync(process.execPath, [join(exampleDir, '..', '..', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(exampleDir, 'tsconfig.json')], { stdio: 'inherit' })
}

export interface Response<T = unknown> { status: number, headers: http.IncomingHttpHeaders, body: T, pid: number, workerId: number }

/**
 * One request on a NEW connection (agent: false). node:cluster balances connections, not requests,
 * so this is what lets consecutive requests land on different workers.
 */
export function request<T = any> (port: number, method: string, path: string, opts: { body?: unknown, raw?: string, token?: string, headers?: Record<string, string>, localAddress?: string } = {}): Promise<Response<T>> {
  const payload = opts.raw ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined)
  const headers: Record<string, string> = { ...opts.headers }
  if (payload !== undefined) {
    headers['content-type'] ??= 'application/json'
    headers['content-length'] = String(Buffer.byteLength(payload))
  }
  if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`
  return new Promise((resolve, reject) => {
    // localAddress (another 127.x.y.z) makes the request come from another client address.
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 15000, ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let body: unknown = text
        try { body = text === '' ? undefined : JSON.parse(text) } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T, pid: Number(res.headers['x-pid']), workerId: Number(res.headers['x-worker-id']) })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)))
    req.on('error', reject)
    if (payload !== undefined) req.write(payload)
    req.end()
  })
}

/** The built server (`node dist/server.js`) as a child process: a primary that forks the workers. */
export class Server {
  private proc: Spawned | undefined
  private cleanedUp: Promise<void> | undefined
  private stopping = false

  constructor (readonly port: number, readonly env: Record<string, string>) {}

  get pid (): number {
    return this.proc?.pid ?? -1
  }

  async start (): Promise<void> {
    ensureBuilt()
    // The shared helper spawns it, parses its JSON log lines and, on cleanup, SIGKILLs the primary
    // and every worker pid it logged.
    const proc = spawnNode(serverJs, { env: { HOST: '127.0.0.1', PORT: String(this.port), ...this.env } })
    this.proc = proc
    if (process.env['EXAMPLE_TEST_LOGS'] === '1') echoLines(proc)
    // Ready = both workers answered /health (not rate limited) on fresh connections.
    await waitFor(async () => {
      const { exitCode, signalCode } = proc.child
      if (exitCode !== null || signalCode !== null) throw new Error(`server exited with ${exitCode}:\n${proc.output().split('\n').slice(-30).join('\n')}`)
      return (await this.distinctPids('/health', 2, 8)).size >= 2
    }, '2 workers answering /health', 60000, 250)
  }

  /** Hit `path` on fresh connections until `want` distinct pids answered or `tries` ran out; returns pid → status. */
  async distinctPids (path: string, want = 2, tries = 40, opts: { token?: string } = {}): Promise<Map<number, number>> {
    const seen = new Map<number, number>()
    for (let i = 0; i < tries && seen.size < want; i++) {
      const r = await request(this.port, 'GET', path, opts)
      if (Number.isInteger(r.pid)) seen.set(r.pid, r.status)
    }
    return seen
  }

  /** Requests on fresh connections until one lands on a worker other than `pid` (bounded). */
  async onOtherWorker<T = any> (pid: number, method: string, path: string, opts: Parameters<typeof request>[3] = {}, tries = 60): Promise<Response<T>> {
    for (let i = 0; i < tries; i++) {
      const r = await request<T>(this.port, method, path, opts)
      if (r.pid !== pid) return r
    }
    throw new Error(`no request to ${path} landed on a worker other than ${pid} in ${tries} tries`)
  }

  /** The server's JSON log lines so far (primary and workers). */
  logs (): Array<Record<string, unknown>> {
    return [...(this.proc?.lines ?? [])]
  }

  /** Send `signal` to the primary only (not its process group). */
  signal (signal: NodeJS.Signals): void {
    if (signal === 'SIGTERM' || signal === 'SIGINT') this.stopping = true
    this.proc?.child.kill(signal)
  }

  /**
   * SIGTERM the primary (graceful: workers drain) unless already asked, and wait; SIGKILL after 30 s.
   * Then the shared cleanup kills any worker left behind.
   */
  async stop (): Promise<number | null> {
    const proc = this.proc
    if (proc === undefined) return null
    const child = proc.child
    if (child.exitCode !== null) {
      await (this.cleanedUp ??= proc.cleanup())
      return child.exitCode
    }
    // A second SIGTERM would tell the primary to kill the workers at once: send only one.
    if (!this.stopping) this.signal('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000)
    try {
      return (await proc.exited).code
    } finally {
      clearTimeout(timer)
      await (this.cleanedUp ??= proc.cleanup())
    }
  }
}

/** EXAMPLE_TEST_LOGS=1: copy the server's output, line by line, to stderr. */
function echoLines (proc: Spawned): void {
  for (const stream of [proc.child.stdout, proc.child.stderr]) {
    let buf = ''
    stream?.on('data', (d: string) => {
      buf += d
      const parts = buf.split('\n')
      buf = parts.pop() ?? ''
      for (const l of parts) process.stderr.write(`[server] ${l}\n`)
    })
  }
}
