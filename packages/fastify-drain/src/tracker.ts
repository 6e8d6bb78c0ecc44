import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { EventEmitter } from 'node:events'

/**
 * What we know of a socket: open responses on it, when it was last busy, whether it was upgraded.
 * Kept in a Map rather than as properties on the socket: adding properties to Node's socket objects
 * changes their shape and slowed every request of the whole http stack by ~10% in bench/drain.mjs.
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

/**
 * Follows every connection and every request of one server, at the lowest level (the server's
 * 'connection' and 'request' events) so the hot path costs a Set add/delete and one 'close' listener.
 */
export class Tracker {
  readonly sockets = new Map<Socket, SocketState>()
  readonly sessions = new Set<Session>()
  /** Responses not finished yet. */
  readonly open = new Set<ServerResponse>()
  draining = false
  private readonly server: EventEmitter
  private readonly events: TrackerEvents

  constructor (server: EventEmitter, events: TrackerEvents, kind: { http2: boolean, https: boolean }) {
    this.server = server
    this.events = events
    const tracker = this

    // Fastify's handler is the server's 'request' listener: run it from ours, so a request can be
    // counted before Fastify sees it and refused when it can no longer be served.
    const listeners = server.listeners('request') as Listener[]
    const inner: Listener = listeners.length === 1 && listeners[0] !== undefined
      ? listeners[0]
      : function (this: unknown, req, res) { for (const l of listeners) l.call(this, req, res) }
    server.removeAllListeners('request')
    server.on('request', function drainRequest (this: unknown, req: IncomingMessage, res: ServerResponse) {
      if (tracker.draining && events.refuse(req, res)) return
      tracker.open.add(res)
      const state = tracker.sockets.get(req.socket)
      if (state !== undefined) state.active++
      if (tracker.draining && req.httpVersionMajor === 1) res.setHeader('Connection', 'close')
      res.on('close', onResponseClose) // 'close' comes once; on() skips once()'s wrapper
      inner.call(this, req, res)
    })

    function onResponseClose (this: ServerResponse): void {
      tracker.open.delete(this)
      const socket = this.req.socket
      const state = tracker.sockets.get(socket)
      if (state === undefined) return
      state.active--
      state.last = Date.now()
      if (tracker.draining && state.active === 0 && !socket.destroyed) events.idle()
    }

    if (kind.http2) {
      // Streams of a session share one socket: the session is the unit to GOAWAY and to destroy.
      server.on('session', (session: Session) => {
        this.sessions.add(session)
        session.once('close', () => { this.sessions.delete(session); events.gone() })
      })
    } else {
      server.on(kind.https ? 'secureConnection' : 'connection', (socket: Socket) => {
        this.sockets.set(socket, { active: 0, last: Date.now(), upgraded: false })
        socket.once('close', () => { this.sockets.delete(socket); events.gone() })
      })
    }
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
