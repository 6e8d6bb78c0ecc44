import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { EventEmitter } from 'node:events'

/**
 * What we know of a socket: open responses on it, when it was last busy, whether it was upgraded.
 * Kept in a Map rather than as properties on the socket, so Node's socket objects keep their shape.
 */
export interface SocketState {
  active: number
  last: number
  upgraded: boolean
}

/** An HTTP/2 session, reduced to what the drain uses. */
export interface Session extends EventEmitter {
  close (): void
  destroy (): void
  readonly closed: boolean
}

type Listener = (this: unknown, req: IncomingMessage, res: ServerResponse) => void

export interface TrackerEvents {
  /** The last open response on `socket` ended and the socket is still open. */
  idle (): void
  /** A socket or session closed. */
  gone (): void
  /** Draining: the request must not run (answer it yourself). Return true when you did. */
  refuse (req: IncomingMessage, res: ServerResponse): boolean
}

/** Node's own pointer from a socket to the response being written on it (what closeIdleConnections reads). */
function current (socket: Socket): ServerResponse | null {
  return (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? null
}

/**
 * Follows every connection of one server (its 'connection' event) and, once draining, every request
 * (its 'request' event). Before the drain the request path costs one function call and a boolean
 * test: the responses in flight at that moment are found through their sockets when draining starts.
 */
export class Tracker {
  readonly sockets = new Map<Socket, SocketState>()
  readonly sessions = new Set<Session>()
  /** Responses not finished yet, followed since draining started (HTTP/2: always). */
  readonly open = new Set<ServerResponse>()
  draining = false
  private readonly server: EventEmitter
  private readonly events: TrackerEvents
  private readonly always: boolean
  private readonly onResponseClose: (this: ServerResponse) => void

  constructor (server: EventEmitter, events: TrackerEvents, kind: { http2: boolean, https: boolean, allowHTTP1?: boolean }) {
    this.server = server
    this.events = events
    // HTTP/2 streams have no socket of their own to look at when draining starts: follow them always.
    this.always = kind.http2
    const tracker = this

    // Fastify's handler is the server's 'request' listener: run it from ours, so a request can be
    // followed before Fastify sees it, and refused when it can no longer be served.
    const listeners = server.listeners('request') as Listener[]
    const inner: Listener = listeners.length === 1 && listeners[0] !== undefined
      ? listeners[0]
      : function (this: unknown, req, res) { for (const l of listeners) l.call(this, req, res) }
    server.removeAllListeners('request')
    server.on('request', function drainRequest (this: unknown, req: IncomingMessage, res: ServerResponse) {
      if (tracker.draining) {
        if (events.refuse(req, res)) return
        if (req.httpVersionMajor === 1) res.setHeader('Connection', 'close')
        tracker.follow(res, req.socket)
      } else if (tracker.always) {
        tracker.follow(res, req.socket)
      }
      inner.call(this, req, res)
    })

    this.onResponseClose = function onResponseClose (this: ServerResponse): void {
      tracker.open.delete(this)
      const socket = this.req.socket
      const state = tracker.sockets.get(socket)
      if (state === undefined) return
      state.active--
      state.last = Date.now()
      if (tracker.draining && state.active === 0 && !socket.destroyed) events.idle()
    }

    const track = (socket: Socket): void => {
      this.sockets.set(socket, { active: 0, last: Date.now(), upgraded: false })
      socket.once('close', () => { if (this.sockets.delete(socket)) events.gone() })
    }
    /**
     * TLS: a connection is followed from its TCP 'connection', so one still in its handshake (or a
     * client that connected and never sent a ClientHello) is seen by the drain: it is idle, closed
     * like any idle socket, instead of holding the server's close until the deadline unseen. Once
     * the handshake is done, the TLS socket (what requests carry) takes the TCP socket's place,
     * or, for an h2 session, the session does.
     */
    const secured = (tls: Socket & { _parent?: Socket | null }, keep: boolean): void => {
      const raw = tls._parent
      const state = raw != null ? this.sockets.get(raw) : undefined
      if (raw != null) this.sockets.delete(raw)
      if (keep) {
        track(tls)
        if (state !== undefined) { const now = this.sockets.get(tls); if (now !== undefined) now.last = state.last }
      } else if (state !== undefined) {
        events.gone()
      }
    }
    if (kind.http2) {
      // Streams of a session share one socket: the session is the unit to GOAWAY and to destroy.
      server.on('session', (session: Session) => {
        this.sessions.add(session)
        session.once('close', () => { this.sessions.delete(session); events.gone() })
      })
      // allowHTTP1: the TLS connections that did not negotiate h2 are plain HTTP/1.1 sockets.
      if (kind.allowHTTP1 === true) {
        server.on('connection', track)
        server.on('secureConnection', (socket: Socket & { alpnProtocol?: string | false }) => {
          secured(socket, socket.alpnProtocol !== 'h2')
        })
      }
    } else if (kind.https) {
      server.on('connection', track)
      server.on('secureConnection', (socket: Socket) => { secured(socket, true) })
    } else {
      server.on('connection', track)
    }
  }

  private follow (res: ServerResponse, socket: Socket): void {
    if (this.open.has(res)) return
    this.open.add(res)
    const state = this.sockets.get(socket)
    if (state !== undefined) state.active++
    res.on('close', this.onResponseClose)
  }

  /**
   * Draining starts: from now on every request is followed; the responses already in flight are
   * picked up from their sockets, and every socket counts as just used (its linger starts now).
   */
  startDraining (): void {
    this.draining = true
    const now = Date.now()
    for (const [socket, state] of this.sockets) {
      state.last = now
      const res = current(socket)
      if (res !== null && !res.writableFinished) this.follow(res, socket)
    }
  }

  /** Requests in flight now. Before draining (HTTP/1) counted from the sockets, on demand. */
  inFlight (): number {
    if (this.draining || this.always) return this.open.size
    let n = 0
    for (const socket of this.sockets.keys()) if (current(socket) !== null) n++
    return n
  }

  /** Idle: no response open or being written (a pipelined one may be), not upgraded. */
  isIdle (socket: Socket, state: SocketState): boolean {
    return state.active === 0 && !state.upgraded && current(socket) === null
  }

  /** Mark upgraded sockets (WebSocket): they are never idle, only the deadline closes them. */
  watchUpgrades (): void {
    if (this.server.listenerCount('upgrade') === 0) return // nobody upgrades: node destroys such sockets
    this.server.prependListener('upgrade', (_req: IncomingMessage, socket: Socket) => {
      const state = this.sockets.get(socket)
      if (state !== undefined) state.upgraded = true
    })
  }
}
