import type { Socket } from 'node:net'
import type { EventEmitter } from 'node:events'

/**
 * What the drain uses of a `ws` WebSocket (the library behind `@fastify/websocket`, Socket.IO's
 * websocket transport and most Node WebSocket servers). Duck-typed: `ws` is not a dependency of
 * the plugin, and apps bring their own version.
 */
export interface WebSocketLike extends EventEmitter {
  readonly readyState: number
  close (code?: number, reason?: string): void
  terminate (): void
}

/** `ws`'s readyState values (the WHATWG ones). */
const CONNECTING = 0
const OPEN = 1
const CLOSED = 3

/** RFC 6455 close codes the drain sends. */
export const GOING_AWAY = 1001
export const SERVICE_RESTART = 1012

/** `ws` keeps the WebSocket on its socket under a private symbol, `Symbol('websocket')`. */
let wsSymbol: symbol | undefined

function isWebSocket (value: unknown): value is WebSocketLike {
  const v = value as Partial<WebSocketLike> | null
  return typeof v === 'object' && v !== null && typeof v.readyState === 'number' &&
    typeof v.close === 'function' && typeof v.terminate === 'function' && typeof v.once === 'function'
}

/**
 * The `ws` WebSocket an upgraded socket carries, whichever `ws` server (or how many) upgraded it:
 * `ws` sets `socket[Symbol('websocket')]` in `setSocket()`. Reading it is how the drain finds the
 * WebSockets of servers it was never told about (`new WebSocketServer({ server: app.server })`);
 * `@fastify/websocket`'s `websocketServer.clients` is read as well, should `ws` ever rename it.
 */
export function webSocketOf (socket: Socket): WebSocketLike | undefined {
  if (wsSymbol === undefined) {
    wsSymbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'websocket')
    if (wsSymbol === undefined) return undefined
  }
  const ws = (socket as unknown as Record<symbol, unknown>)[wsSymbol]
  return isWebSocket(ws) ? ws : undefined
}

/** `@fastify/websocket`'s server (`app.websocketServer`), when the app has one. */
export function clientsOf (server: unknown): Iterable<unknown> {
  const clients = (server as { clients?: unknown } | null | undefined)?.clients
  return clients instanceof Set ? clients : []
}

/**
 * Close every given WebSocket with `code` now, and terminate what has not finished its closing
 * handshake `grace` ms later. A WebSocket the app already closed (CLOSING: in a `drainSignal`
 * listener, with its own goodbye and code) gets no second close frame, only the same grace.
 * Resolves with how many had to be terminated.
 */
export function closeWebSockets (sockets: Iterable<WebSocketLike>, code: number, grace: number): { count: number, done: Promise<number> } {
  const pending = new Set<WebSocketLike>()
  const reason = code === SERVICE_RESTART ? 'server restarting' : 'server going away'
  for (const ws of sockets) {
    if (ws.readyState === CLOSED || pending.has(ws)) continue
    pending.add(ws)
    if (ws.readyState === OPEN || ws.readyState === CONNECTING) {
      try { ws.close(code, reason) } catch { ws.terminate() } // CONNECTING client-side only; never on a server's socket
    }
  }
  const count = pending.size
  if (count === 0) return { count, done: Promise.resolve(0) }
  const done = new Promise<number>((resolve) => {
    const finish = (): void => {
      clearTimeout(timer)
      let terminated = 0
      for (const ws of pending) {
        if (ws.readyState !== CLOSED) { terminated++; ws.terminate() }
      }
      resolve(terminated)
    }
    const timer = setTimeout(finish, grace)
    for (const ws of pending) {
      ws.once('close', () => {
        pending.delete(ws)
        if (pending.size === 0) finish()
      })
    }
  })
  return { count, done }
}
