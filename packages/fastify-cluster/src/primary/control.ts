import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { dirname, isAbsolute } from 'node:path'
import type { PrimaryHandle } from '../types.js'
import { MAX_WORKERS, type ResolvedOptions } from '../options.js'
import { ensureReportDirectory } from '../probe.js'
import { errors, ControlRefusal } from '../errors.js'
import { DIAGNOSE_CHANNEL } from '../messages.js'
import { machineOf } from './supervisor.js'
import {
  COMMANDS, IDLE_TIMEOUT_MS, MAX_CONNECTIONS, MAX_REQUEST_BYTES, PROTOCOL_VERSION, encode, lineSplitter,
  type ControlError, type DiagnoseRequest, type DiagnoseResult, type HelloResult, type ReloadReply, type StatusResult, type WorkerStatus
} from '../control-protocol.js'

/**
 * The primary's control socket: the handle `startClustered` returns (status, reload, scale, close,
 * the request/reply channel for diagnostics), reachable by the `nclust` bin of the same user.
 * Nothing here changes workers by itself: every command is one call on the handle.
 *
 * Who may connect: the socket is 0600 in a folder that is 0700 (or at least not writable by
 * others), so the kernel refuses other uids at connect(). Node has no SO_PEERCRED API; the file
 * modes are the check (test/control.test.ts runs the client as another user).
 */

/** Set after an upgrade (./upgrade.ts): the same socket file now answers from the new primary; never unlink it. */
let keepControlPath = false
export function handOverControlPath (keep = true): void { keepControlPath = keep }

/** Take the socket path: refuse a live one, replace a stale one (its primary was killed). */
export async function claimControl (path: string): Promise<Server> {
  const dir = dirname(path)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new errors.NCLUST_CLUSTER_CONTROL_PATH(`control socket folder ${dir} cannot be created: ${(err as Error).message}`)
  }
  const st = statSync(dir)
  if ((st.mode & 0o022) !== 0) {
    // Group-writable is as bad as world-writable: a member of the group can replace the socket.
    throw new errors.NCLUST_CLUSTER_CONTROL_PATH(`control socket folder ${dir} is writable by ${(st.mode & 0o002) !== 0 ? 'every user' : 'its group'}; give a private folder (--control / NCLUST_CONTROL), or false`)
  }
  if (typeof process.getuid === 'function' && st.uid !== process.getuid() && st.uid !== 0) {
    throw new errors.NCLUST_CLUSTER_CONTROL_PATH(`control socket folder ${dir} belongs to uid ${st.uid}, not to this user; give a private folder`)
  }
  let existing
  try { existing = lstatSync(path) } catch {}
  if (existing !== undefined) {
    if (!existing.isSocket()) throw new errors.NCLUST_CLUSTER_CONTROL_PATH(`control socket path ${path} exists and is not a socket; remove it or give another path`)
    const owner = await probe(path)
    if (owner !== 'stale') {
      throw new errors.NCLUST_CLUSTER_CONTROL_IN_USE(`control socket ${path} belongs to a running cluster${owner !== undefined ? ` (primary pid ${owner.pid}, from ${owner.cwd})` : ''}; stop it, or give this one another --control path`)
    }
    unlinkSync(path)
  }
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE'
        ? new errors.NCLUST_CLUSTER_CONTROL_IN_USE(`control socket ${path} was taken by another cluster starting at the same time`)
        : new errors.NCLUST_CLUSTER_CONTROL_PATH(`control socket ${path} cannot listen: ${err.message}`))
    })
    // bind() creates the socket file with the umask's mode: 0600 from the first instant, chmod below only confirms it.
    const umask = process.umask(0o177)
    try { server.listen(path, () => resolve()) } finally { process.umask(umask) }
  })
  chmodSync(path, 0o600)
  return server
}

/** Live (and who), stale (nobody accepts), or live but silent (undefined). */
function probe (path: string): Promise<HelloResult | 'stale' | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection(path)
    let buf = ''
    const done = (v: HelloResult | 'stale' | undefined): void => { clearTimeout(timer); socket.destroy(); resolve(v) }
    const timer = setTimeout(() => done(undefined), 2000)
    socket.on('connect', () => socket.write(encode({ v: PROTOCOL_VERSION, cmd: 'hello' })))
    socket.on('data', (d) => {
      buf += d.toString('utf8')
      if (!buf.includes('\n')) return
      try { done((JSON.parse(buf) as { result?: HelloResult }).result) } catch { done(undefined) }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'stale' : undefined))
  })
}

/** After the reply: a client that does not read it (or never closes its side) is cut after this long, ms. */
export const LINGER_MS = 2000

export function serveControl (server: Server, path: string, handle: PrimaryHandle, options: ResolvedOptions): void {
  const log = handle.logger
  const startedAt = Date.now()
  // What status and reload read: the slot machine's own state (usage, exits, restarts, shutdown), no copy kept here.
  const found = machineOf(handle)
  if (found === undefined) throw new Error('serveControl: the handle does not come from startSupervisor')
  const machine = found
  let exitAfterReply: number | undefined

  // Ours to remove: on close, and on a process.exit that skipped it (compared by inode: a path another primary took over is not ours).
  const ino = statSync(path).ino
  let closed = false
  const removeSocket = (): void => {
    if (closed) return
    closed = true
    server.close()
    if (!keepControlPath) try { if (statSync(path).ino === ino) unlinkSync(path) } catch {}
  }
  handle.onClose(removeSocket)
  process.once('exit', removeSocket)
  log.info({ control: path }, `control socket: ${path}`)

  server.on('error', (err) => log.error({ err }, 'control socket error'))
  // Not server.maxConnections: over it node drops the connection without a word. Counted here, so
  // a client over the limit is told `busy`.
  let open = 0
  server.on('connection', (socket) => {
    open += 1
    socket.once('close', () => { open -= 1 })
    serve(socket, open > MAX_CONNECTIONS)
  })

  /**
   * One request per connection: the first line is the request; nothing after it is parsed
   * (`status\nstop\n` in one write runs only `status`), and is closed once the reply is out.
   * Timers: IDLE_TIMEOUT_MS for the request line, LINGER_MS for the client to take the reply.
   */
  function serve (socket: Socket, busy: boolean): void {
    let answered = false
    let timer: NodeJS.Timeout | undefined
    const arm = (ms: number, fn: () => void): void => { clearTimeout(timer); timer = setTimeout(fn, ms); timer.unref() }
    socket.on('error', () => {})
    socket.on('close', () => clearTimeout(timer))
    const reply = (body: object): void => {
      if (answered) return
      answered = true
      stopReading()
      // Closed once the client closes too (at the end of the reply, as every client does), or
      // after LINGER_MS: a client that never reads it or never closes its side does not keep the slot.
      // Not destroyed at once: unread request bytes would reset the connection and lose the reply.
      arm(LINGER_MS, () => socket.destroy())
      socket.end(encode({ v: PROTOCOL_VERSION, ...body }), () => {
        if (exitAfterReply !== undefined) process.exit(exitAfterReply)
      })
    }
    const fail = (code: ControlError['code'], message: string): void => reply({ ok: false, error: { code, message } })
    const onData = lineSplitter(MAX_REQUEST_BYTES, (line) => {
      if (answered || timer === undefined) return // the first line only
      clearTimeout(timer)
      timer = undefined
      stopReading()
      void dispatch(line).then((result) => reply({ ok: true, result }), (err: Error) => fail(err instanceof ControlRefusal ? err.controlCode : 'failed', err.message))
    }, () => fail('too-large', `request over ${MAX_REQUEST_BYTES} bytes`))
    /** Whatever comes after the first line is read and thrown away (never parsed, never run). */
    function stopReading (): void {
      socket.off('data', onData)
      socket.on('data', () => {})
    }
    if (busy) { fail('busy', `${MAX_CONNECTIONS} control connections are open; try again`); return }
    // A client that connects and says nothing (or never finishes its line) does not hold the primary.
    arm(IDLE_TIMEOUT_MS, () => fail('idle', `no complete request within ${IDLE_TIMEOUT_MS}ms`))
    socket.on('data', onData)
  }

  function refuse (code: string, message: string): Error {
    return new ControlRefusal(code, message)
  }

  async function dispatch (line: string): Promise<unknown> {
    let req: { v?: unknown, cmd?: unknown, args?: unknown }
    try { req = JSON.parse(line) } catch { throw refuse('bad-request', 'the request is not JSON') }
    if (typeof req !== 'object' || req === null) throw refuse('bad-request', 'the request is not a JSON object')
    if (req.v !== PROTOCOL_VERSION) throw refuse('version', `protocol version ${JSON.stringify(req.v)} is not supported: this primary speaks ${PROTOCOL_VERSION}`)
    const args = (typeof req.args === 'object' && req.args !== null ? req.args : {}) as Record<string, unknown>
    switch (req.cmd) {
      case 'hello': return { pid: process.pid, cwd: process.cwd(), port: options.port, argv: process.argv.slice(1) } satisfies HelloResult
      case 'status': return status()
      case 'reload': return await reload()
      case 'scale': {
        const n = args.n
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw refuse('bad-request', `scale: expected an integer from 1 to ${MAX_WORKERS}, got ${JSON.stringify(n)}`)
        return await handle.scale(n)
      }
      case 'stop': {
        const code = await handle.close()
        // As after SIGTERM: the primary exits with the cluster's code once the answer is out
        // (or a second later if the client went away). An embedder (handleSignals: false) decides itself.
        if (options.handleSignals) {
          exitAfterReply = code
          setTimeout(() => process.exit(code), 1000)
        }
        return { code }
      }
      case 'diagnose': return await diagnose(args)
      case 'upgrade': {
        // See ./upgrade.ts: the reply comes once the new primary is ready (or failed); then this one drains and exits.
        if (handle.upgrade === undefined) throw refuse('failed', 'this primary cannot upgrade itself (workers: 1, or started without the CLI wiring)')
        const node = args.node
        if (node !== undefined && (typeof node !== 'string' || node === '')) throw refuse('bad-request', 'upgrade: node must be a path')
        return await handle.upgrade(node !== undefined ? { node } : {})
      }
      default:
        throw refuse('unknown-command', `unknown command ${JSON.stringify(req.cmd)}: expected one of ${COMMANDS.join(', ')}`)
    }
  }

  function status (): StatusResult {
    const now = Date.now()
    const workers = handle.workers()
    const procByPid = new Map([...machine.procs.values()].map((p) => [p.pid, p]))
    return {
      primary: {
        pid: process.pid,
        uptime: Math.round((now - startedAt) / 100) / 10,
        node: process.version,
        balance: options.balance,
        port: options.port,
        cwd: process.cwd(),
        control: path,
        workers: { desired: handle.size, ready: workers.filter((w) => w.state === 'ready').length },
        restarts: machine.restarts
      },
      workers: workers.map((w): WorkerStatus => {
        // Usage as the last heartbeat said (none before the first); the last exit the primary did not ask for.
        const p = procByPid.get(w.pid)
        const beat = p !== undefined && p.heartbeats > 0 ? p : undefined
        const last = p?.slot.lastExit
        return {
          id: w.workerId,
          pid: w.pid,
          state: w.state,
          generation: w.generation,
          uptime: Math.round((now - w.startedAt) / 100) / 10,
          rss: beat?.rss ?? null,
          cpu: beat?.cpu ?? null,
          elu: beat?.elu ?? null,
          requests: beat?.requests ?? null,
          restarts: w.restarts,
          lastExit: last === undefined ? null : { pid: last.pid, reason: last.reason, code: last.code, signal: last.signal, ...(last.error !== undefined ? { error: last.error } : {}) }
        }
      })
    }
  }

  async function reload (): Promise<ReloadReply> {
    const before = new Map(handle.workers().filter((w) => w.state === 'ready').map((w) => [w.workerId, w.pid]))
    const readyDuring = new Map<number, number>()
    // A slot's last exit is replaced (a new object) by every exit the primary did not ask for.
    const exitsBefore = new Map(machine.slots.map((x) => [x.id, x.lastExit]))
    const onReady = (e: { workerId: number, pid: number }): void => { readyDuring.set(e.workerId, e.pid) }
    handle.events.on('worker-ready', onReady)
    try {
      const r = await handle.reload()
      const out: ReloadReply = {
        ok: r.ok,
        ms: r.ms,
        replaced: r.replaced,
        slots: [...before].map(([id, old]) => ({ id, old, new: readyDuring.get(id) ?? null, generation: r.slots.find((x) => x.workerId === id)?.generation ?? null })),
        serving: handle.workers().filter((w) => w.state === 'ready').map((w) => w.pid)
      }
      const id = r.failedWorkerId
      // A shutdown stops a reload: its candidate was asked to leave, it did not fail.
      if (!r.ok && (id === undefined || machine.shuttingDown)) out.reason = machine.shuttingDown ? 'the cluster is shutting down' : r.reason ?? 'unknown'
      else if (!r.ok && id !== undefined) {
        const last = machine.slots.find((x) => x.id === id)?.lastExit
        const exit = last !== exitsBefore.get(id) && last?.pid !== before.get(id) ? last : undefined
        out.failed = {
          id,
          pid: exit?.pid ?? null,
          reason: r.reason ?? 'unknown',
          ...(exit?.error !== undefined ? { message: exit.error } : {}),
          ...(exit?.stack !== undefined ? { stack: exit.stack } : {})
        }
      }
      return out
    } finally {
      handle.events.off('worker-ready', onReady)
    }
  }

  async function diagnose (args: Record<string, unknown>): Promise<DiagnoseResult> {
    const { worker, kind, dir, ms } = args
    if (typeof worker !== 'number' || !Number.isInteger(worker)) throw refuse('bad-request', `diagnose: expected a worker id, got ${JSON.stringify(worker)}`)
    if (kind !== 'report' && kind !== 'heap' && kind !== 'cpu') throw refuse('bad-request', 'diagnose: expected --report, --heap or --cpu <ms>')
    if (dir !== undefined && (typeof dir !== 'string' || !isAbsolute(dir))) throw refuse('bad-request', 'diagnose: expected an absolute output folder')
    // Without --out: the cluster's report folder (reportDirectory / NCLUST_REPORT_DIR), where hang
    // reports go too, with the same checks (ours, not writable by others; the default made 0700).
    const out = typeof dir === 'string' ? dir : options.reportDirectory
    try {
      ensureReportDirectory(out, typeof dir !== 'string' && options.reportDirectoryIsDefault)
    } catch (err) {
      throw refuse('bad-request', `diagnose: ${(err as Error).message}`)
    }
    const payload: DiagnoseRequest = { kind, dir: out, ...(typeof ms === 'number' ? { ms } : {}) }
    const timeout = (kind === 'cpu' && typeof ms === 'number' ? ms : 0) + 120_000
    return await handle.request<DiagnoseResult>(worker, DIAGNOSE_CHANNEL, payload, { timeout })
  }
}
