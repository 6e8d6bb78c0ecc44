import type { Worker } from 'node:cluster'
import type { Server, Socket } from 'node:net'
import { message, type ConnectionMessage } from '../messages.js'
import { frameProxyHeader, PROXY_V2_MAX, type ProxiedPeer } from './proxy-protocol.js'

/**
 * The primary-owns-the-listener hand-over, on its own so that any listener can use it (balance
 * 'sticky' over its own socket; an upgrade balancing over inherited sockets): the primary accepts
 * paused and never parses HTTP, a chooser picks a worker, and the socket travels to that worker in
 * an IPC message; the worker emits it on its server as if it had accepted it itself
 * (`acceptFromPrimary` in ../worker/listener.ts).
 *
 * With `proxyProtocol`, the primary first reads the PROXY protocol header and nothing else (at most
 * {@link PROXY_V2_MAX} bytes, within `headerTimeout`): a connection whose first bytes are not a
 * valid header is closed, and whatever arrived after the header in the same read travels with the
 * socket (`head`), to be read by the worker's server first.
 */

/** A connection ready to be placed: the address to hash (the PROXY header's client, else the peer's). */
export interface Incoming {
  socket: Socket
  address: string
  /** The client the PROXY header named; the worker shows it as `socket.remoteAddress` (and so Fastify's `request.ip`). */
  peer?: ProxiedPeer
  /** Bytes that came after the PROXY header in its last read. */
  head?: Buffer
}

/** Picks a worker for each connection, now or later (it may hold the connection while its worker starts). */
export interface Chooser {
  place (conn: Incoming): void
}

/** How long a PROXY header may take to arrive, ms. A proxy sends it with the connection's first bytes. */
export const PROXY_HEADER_TIMEOUT = 5000

export interface AcceptOptions {
  proxyProtocol: boolean
  headerTimeout?: number
  /** A connection closed for its PROXY header (missing, malformed, too long, too slow). */
  onRefused?: (reason: string, socket: Socket) => void
}

/**
 * Feed every connection of `server` (made with `pauseOnConnect: true`) to `chooser`. The server is
 * the caller's: listening, closing and its errors stay there.
 */
export function acceptConnections (server: Server, chooser: Chooser, options: AcceptOptions): void {
  const headerTimeout = options.headerTimeout ?? PROXY_HEADER_TIMEOUT
  server.on('connection', (socket: Socket) => {
    if (!options.proxyProtocol) {
      const address = socket.remoteAddress
      if (address === undefined) { socket.destroy(); return } // already gone
      chooser.place({ socket, address })
      return
    }
    readProxyHeader(socket, headerTimeout, (err, peer, head) => {
      if (err !== undefined) {
        options.onRefused?.(err, socket)
        socket.destroy()
        return
      }
      const address = peer?.address ?? socket.remoteAddress
      if (address === undefined) { socket.destroy(); return }
      chooser.place({ socket, address, ...(peer !== undefined ? { peer } : {}), ...(head !== undefined && head.length > 0 ? { head } : {}) })
    })
  })
}

/** Read the PROXY header of a paused socket; the socket is paused again (and its handle stopped) when `done` runs. */
function readProxyHeader (socket: Socket, timeout: number, done: (err: string | undefined, peer?: ProxiedPeer, head?: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  let finished = false
  const finish = (err: string | undefined, peer?: ProxiedPeer, head?: Buffer): void => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    socket.removeListener('data', onData)
    socket.removeListener('end', onEnd)
    socket.removeListener('error', onError)
    socket.pause()
    // Stop the handle now, in this tick: nothing more is read into the primary, whose copy closes once sent.
    const handle = (socket as unknown as { _handle?: { reading?: boolean, readStop?: () => void } | null })._handle
    if (handle?.readStop !== undefined) { handle.reading = false; handle.readStop() }
    done(err, peer, head)
  }
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    const f = frameProxyHeader(buf)
    if (f.state === 'more') {
      if (buf.length >= PROXY_V2_MAX) finish('PROXY header too long')
      return
    }
    if (f.state === 'error') { finish(f.reason); return }
    finish(undefined, f.peer, buf.subarray(f.length))
  }
  const onEnd = (): void => finish('closed before its PROXY header')
  const onError = (err: Error): void => finish(`error before its PROXY header: ${err.message}`)
  const timer = setTimeout(() => finish(`no PROXY header within ${timeout}ms`), timeout)
  timer.unref()
  socket.on('data', onData)
  socket.on('end', onEnd)
  socket.on('error', onError)
  socket.resume()
}

/**
 * Send one connection to `worker`. `done(err)`: an error means the socket is still the primary's
 * (the worker is gone or its channel closed): the caller places it again or closes it.
 */
export function handOver (worker: Worker, conn: Incoming, done: (err: Error | null) => void): void {
  const msg = message<ConnectionMessage>({
    type: 'connection',
    ...(conn.peer !== undefined ? { peer: conn.peer } : {}),
    ...(conn.head !== undefined ? { head: conn.head.toString('base64') } : {})
  })
  try {
    // keepOpen false (default): once sent, the primary's copy is closed; the worker owns the socket.
    worker.send(msg, conn.socket, (err: Error | null) => done(err))
  } catch (err) {
    done(err as Error)
  }
}
