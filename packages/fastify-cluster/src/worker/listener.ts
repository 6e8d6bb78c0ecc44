import { Socket } from 'node:net'
import type { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { isPrimaryMessage, message, type ListenerMessage } from '../messages.js'

/**
 * balance 'kernel', worker side (see `createListenerKeeper` in ../balance.ts): ask the primary for
 * this slot's listening socket. Resolves with the raw handle, or undefined when the slot has none yet
 * (or no answer came within `timeoutMs`): then the worker opens its own and offers it.
 */
export async function slotListener (timeoutMs = 10000): Promise<object | undefined> {
  if (typeof process.send !== 'function') return undefined
  return await new Promise((resolve) => {
    const onMessage = (raw: unknown, handle: unknown): void => {
      if (!isPrimaryMessage(raw) || raw.type !== 'listener') return
      done(handle !== null && typeof handle === 'object' ? handle : undefined)
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    function done (handle: object | undefined): void {
      clearTimeout(timer)
      process.off('message', onMessage)
      resolve(handle)
    }
    process.on('message', onMessage)
    process.send?.(message<ListenerMessage>({ type: 'listener', want: true }), undefined, undefined, () => {})
  })
}

/** Give the primary a copy of the socket this worker just opened, for the slot's next generations. */
export function offerListener (app: FastifyInstance): void {
  const handle = (app.server as unknown as { _handle?: object | null })._handle
  if (handle === null || handle === undefined || typeof process.send !== 'function') return
  // A raw TCP handle travels as 'net.Native': the primary holds the descriptor without listening on it.
  process.send(message<ListenerMessage>({ type: 'listener', want: false }), handle as never, undefined, () => {})
}

/**
 * balance 'sticky', worker side (see ../primary/sticky.ts and ../primary/handover.ts): the worker
 * does not listen; the primary hands it connections, paused and unread, and the worker's server takes
 * each one as if it had accepted it (the drain follows it through the same 'connection' event).
 *
 * Timeouts: Node starts an HTTP server's connection checks (`headersTimeout`, `requestTimeout`,
 * every `connectionsCheckingInterval`) and its connection list (which `closeIdleConnections()` and
 * so `server.close()` use) on `'listening'`, which a server that never listens never emits. We run
 * Node's own `setupConnectionsTracking` listener once, here, rather than emit `'listening'` (other
 * listeners, Fastify's or a plugin's, would think the server has an address) or make the server
 * listen on a private socket (a socket file per worker in a private folder, left behind by a
 * SIGKILLed worker, and `onListen` hooks would report an address no client can use). It is found by
 * its name on the server's listeners (the same in Node 20, 22 and 24; tested by
 * test/sticky.test.ts's timeout test in both modes); without it the worker warns once.
 * `keepAliveTimeout` and Fastify's `connectionTimeout` (`server.timeout`) are applied per socket on
 * 'connection' and per response, so they need nothing.
 *
 * A PROXY protocol client (proxyProtocol): the primary sends the address the header named, and it
 * becomes the socket's own `remoteAddress` / `remotePort` / `remoteFamily` (own properties over
 * net.Socket's getters), which is what Node's `req.socket.remoteAddress` and so Fastify's
 * `request.ip` read (with `trustProxy` off; with it on, X-Forwarded-For still wins as usual).
 * Bytes the primary read after the header are fed to the server first, as `@socket.io/sticky` does.
 */
export function acceptFromPrimary (app: FastifyInstance, log?: Pick<Logger, 'warn'>): void {
  const server = app.server as unknown as EventEmitter & { emit: (event: 'connection', socket: Socket) => boolean }
  trackConnections(server, log)
  process.on('message', (raw: unknown, handle: unknown) => {
    if (!isPrimaryMessage(raw) || raw.type !== 'connection' || !(handle instanceof Socket)) return
    if (raw.peer !== undefined) {
      Object.defineProperties(handle, {
        remoteAddress: { value: raw.peer.address, configurable: true },
        remotePort: { value: raw.peer.port, configurable: true },
        remoteFamily: { value: raw.peer.family, configurable: true }
      })
    }
    server.emit('connection', handle)
    if (raw.head !== undefined) handle.emit('data', Buffer.from(raw.head, 'base64'))
    handle.resume()
  })
}

/** Run Node's connection tracking on a server that never listens (see above). Returns whether it could. */
export function trackConnections (server: EventEmitter, log?: Pick<Logger, 'warn'>): boolean {
  const setup = server.listeners('listening').find((fn) => fn.name === 'setupConnectionsTracking')
  if (setup !== undefined) {
    setup.call(server)
    return true
  }
  if ('headersTimeout' in server) {
    log?.warn('balance sticky: this Node has no setupConnectionsTracking listener on the HTTP server: headersTimeout and requestTimeout are not enforced on handed-over connections')
  }
  return false
}
