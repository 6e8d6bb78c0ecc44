import { Server as NetServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type { ResolvedOptions } from './options.js'
import type { DrainPhase, DrainState } from './types.js'
import type { Socket } from 'node:net'
import { Tracker } from './tracker.js'
import { clientsOf, closeWebSockets, GOING_AWAY, SERVICE_RESTART, webSocketOf, type WebSocketLike } from './websockets.js'

const BODY = '{"statusCode":503,"error":"Service Unavailable","message":"Server is shutting down, retry on another connection"}'
/** After the deadline's 503s are written, how long their sockets get to flush before being destroyed. */
const FLUSH_GRACE = 200

/** The drain of one server, run once: from `start()` to every socket closed or the deadline. */
export class Drainer {
  phase: DrainPhase = 'serving'
  rejected = 0
  destroyed = 0
  idleClosed = 0
  restart = false
  webSockets = 0
  readonly controller = new AbortController()
  readonly tracker: Tracker
  readonly state: DrainState
  private readonly server: NetServer
  private readonly opts: ResolvedOptions
  private readonly log: FastifyBaseLogger
  private running: Promise<void> | null = null
  private finish: (() => void) | null = null
  private sweepTimer: NodeJS.Timeout | null = null
  private sweepAt = Infinity
  private refusing = false
  private readonly websocketServer: () => unknown

  constructor (server: NetServer, opts: ResolvedOptions, log: FastifyBaseLogger, kind: { http2: boolean, https: boolean, allowHTTP1?: boolean }, websocketServer: () => unknown = () => undefined) {
    this.server = server
    this.websocketServer = websocketServer
    this.opts = opts
    this.log = log
    this.tracker = new Tracker(server, {
      idle: () => { if (this.phase === 'draining') this.arm(opts.linger) },
      gone: () => this.checkDone(),
      refuse: (req, res) => this.refuse(req, res)
    }, kind)
    const self = this
    this.state = {
      get draining () { return self.phase !== 'serving' },
      get phase () { return self.phase },
      get inFlight () { return self.tracker.inFlight() },
      get rejected () { return self.rejected },
      get destroyed () { return self.destroyed },
      get idleClosed () { return self.idleClosed },
      get restart () { return self.restart },
      get webSockets () { return self.webSockets },
      get signal () { return self.controller.signal }
    }
  }

  /**
   * Idempotent: every call returns the same drain. `restart` (first call wins): the process will be
   * replaced (a reload), so WebSockets are closed with 1012 (service restart) instead of 1001.
   */
  start (restart = false): Promise<void> {
    if (this.running === null) this.restart = restart
    this.running ??= this.run()
    return this.running
  }

  private async run (): Promise<void> {
    const started = Date.now()
    const { delay, timeout } = this.opts
    const done = new Promise<void>((resolve) => { this.finish = resolve })
    this.phase = delay > 0 ? 'delaying' : 'draining'
    this.tracker.startDraining()
    this.log.info({ inFlight: this.tracker.open.size, sockets: this.tracker.sockets.size, delay, timeout }, 'drain: started')
    // In-flight responses not started yet will tell their client to go elsewhere next time.
    for (const res of this.tracker.open) {
      if (!res.headersSent && res.req.httpVersionMajor === 1) res.setHeader('Connection', 'close')
    }
    this.controller.abort()
    const deadline = setTimeout(() => this.cut(), timeout)

    if (delay > 0) {
      await sleep(delay) // delay < timeout (validated): the deadline cannot strike before this ends
      this.phase = 'draining'
    }

    // Stop accepting: net's close, not http's, which would also destroy every idle socket at once
    // (racing clients that are sending on them right now). Under node:cluster this tells the primary.
    if (this.server.listening) NetServer.prototype.close.call(this.server)
    for (const session of this.tracker.sessions) session.close() // HTTP/2 GOAWAY: finish streams, open none
    this.closeWebSockets()
    this.sweep()
    this.checkDone()
    await done

    clearTimeout(deadline)
    if (this.sweepTimer !== null) clearTimeout(this.sweepTimer)
    this.phase = 'closed'
    this.refusing = true
    this.log.info({
      ms: Date.now() - started,
      idleClosed: this.idleClosed,
      rejected: this.rejected,
      destroyed: this.destroyed
    }, 'drain: done')
  }

  /**
   * Every WebSocket on this server gets its close frame now (after the listener stopped, so a client
   * that reconnects at once reaches another process), and `websocketGrace` ms for the closing
   * handshake; what is left is terminated. Their sockets then close like any other, ending the drain.
   * A WebSocket opened later during the drain (an upgrade on a keep-alive socket) is closed as it opens.
   */
  private closeWebSockets (): void {
    const code = this.restart ? SERVICE_RESTART : GOING_AWAY
    const found = new Set<WebSocketLike>()
    for (const [socket, state] of this.tracker.sockets) {
      const ws = webSocketOf(socket)
      if (ws === undefined) continue
      state.upgraded = true // never closed as idle: the close handshake, then the grace, decide
      found.add(ws)
    }
    const wss = this.websocketServer()
    for (const ws of clientsOf(wss)) found.add(ws as WebSocketLike)
    if (wss !== undefined && wss !== null && typeof (wss as { on?: unknown }).on === 'function') {
      (wss as { on: (e: string, l: (ws: WebSocketLike) => void) => void }).on('connection', (ws) => {
        void closeWebSockets([ws], code, this.opts.websocketGrace).done
      })
    }
    if (found.size === 0) return
    const { count, done } = closeWebSockets(found, code, this.opts.websocketGrace)
    this.webSockets += count
    this.log.info({ webSockets: count, code, grace: this.opts.websocketGrace }, `drain: closing ${count} WebSocket(s) with ${code}`)
    void done.then((terminated) => {
      if (terminated > 0) {
        this.log.warn({ terminated, grace: this.opts.websocketGrace },
          `drain: ${terminated} WebSocket(s) did not finish the closing handshake within ${this.opts.websocketGrace} ms, terminated`)
      }
    })
  }

  /** Close idle sockets whose linger is over, and come back for the others when theirs is. */
  private sweep (): void {
    this.sweepTimer = null
    this.sweepAt = Infinity
    if (this.phase !== 'draining') return
    const now = Date.now()
    let next = Infinity
    const expired: Socket[] = []
    for (const [socket, state] of this.tracker.sockets) {
      if (!this.tracker.isIdle(socket, state)) {
        if (state.active === 0 && !state.upgraded) next = Math.min(next, now + this.opts.linger) // pipelined: look again
        continue
      }
      const due = state.last + this.opts.linger
      if (due <= now) {
        expired.push(socket)
      } else if (due < next) {
        next = due
      }
    }
    if (expired.length > 0) setImmediate(() => this.closeIdle(expired))
    if (next !== Infinity) this.arm(next - now)
  }

  /**
   * Close sockets whose linger expired, in the check phase of this loop turn rather than in the timer
   * that found them: timers run first in a turn, before the poll phase reads what arrived meanwhile,
   * so after a busy moment (a GC, a neighbour booting on the same core) a request already waiting in
   * the kernel would otherwise be cut with a reset. By the check phase it has been read, and its
   * socket is no longer idle.
   */
  private closeIdle (sockets: Socket[]): void {
    for (const socket of sockets) {
      const state = this.tracker.sockets.get(socket)
      if (state === undefined || socket.destroyed) continue
      if (!this.tracker.isIdle(socket, state) || Date.now() - state.last < this.opts.linger) {
        // Used meanwhile: its response's end re-arms the sweep; a pipelined one is looked at again.
        if (state.active === 0 && !state.upgraded) this.arm(this.opts.linger)
        continue
      }
      this.idleClosed++
      socket.destroy()
    }
  }

  private arm (ms: number): void {
    const at = Date.now() + ms
    if (this.sweepTimer !== null && this.sweepAt <= at) return
    if (this.sweepTimer !== null) clearTimeout(this.sweepTimer)
    this.sweepAt = at
    this.sweepTimer = setTimeout(() => this.sweep(), ms)
  }

  private checkDone (): void {
    if (this.phase !== 'draining' || this.finish === null) return
    if (this.tracker.sockets.size === 0 && this.tracker.sessions.size === 0) this.finish()
  }

  /** Answer 503 to what can no longer be served (after the deadline, or after the drain ended). */
  private refuse (_req: IncomingMessage, res: ServerResponse): boolean {
    if (!this.refusing) return false
    this.reject(res)
    return true
  }

  private reject (res: ServerResponse): void {
    this.rejected++
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(BODY)),
      'retry-after': String(this.opts.retryAfter)
    }
    if (res.req.httpVersionMajor === 1) headers.connection = 'close'
    res.writeHead(503, headers)
    res.end(BODY)
  }

  /** The deadline: 503 what has not started answering, destroy everything else, log what was cut. */
  private cut (): void {
    this.refusing = true
    const routes: Record<string, number> = {}
    const answering = new Set<Socket>()
    let cutRequests = 0
    let streaming = 0
    for (const res of [...this.tracker.open]) {
      const req = res.req
      const route = `${req.method ?? '?'} ${(req.url ?? '').split('?')[0] ?? ''}`
      routes[route] = (routes[route] ?? 0) + 1
      cutRequests++
      if (res.headersSent) streaming++ // an SSE stream, a long download: a handler that ignored drainSignal
      if (!res.headersSent && req.httpVersionMajor === 1 && !req.socket.destroyed) {
        this.reject(res)
        answering.add(req.socket)
      }
    }
    let cutSockets = 0
    for (const socket of this.tracker.sockets.keys()) {
      if (answering.has(socket)) continue
      cutSockets++
      socket.destroy()
    }
    for (const session of this.tracker.sessions) {
      cutSockets++
      session.destroy()
    }
    this.destroyed += cutSockets
    const streams = streaming > 0 ? ` (${streaming} still streaming a response: end streams on request.drainSignal)` : ''
    this.log.error({ requests: cutRequests, streaming, sockets: cutSockets, answered503: answering.size, routes },
      `drain: deadline of ${this.opts.timeout} ms reached, cut ${cutRequests} request(s)${streams} and ${cutSockets} socket(s)`)
    this.checkDone()
    setTimeout(() => {
      for (const socket of this.tracker.sockets.keys()) { this.destroyed++; socket.destroy() }
      this.finish?.()
    }, FLUSH_GRACE).unref()
  }
}
