import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import clusterDrain, { type DrainOptions } from '../src/index.js'

export interface LogLine { level: number, msg: string, [key: string]: unknown }

/** A default Fastify app (as users write it) with the plugin, logs captured in `logs`, not listening yet. */
export async function makeApp (
  drain: DrainOptions = {},
  routes: (app: FastifyInstance) => void = () => {},
  server: Partial<FastifyServerOptions> & { http2?: boolean, https?: object } = {}
): Promise<{ app: FastifyInstance, logs: LogLine[] }> {
  const logs: LogLine[] = []
  const app = Fastify({
    logger: { level: 'info', stream: { write (line: string) { logs.push(JSON.parse(line) as LogLine) } } },
    ...server
  } as FastifyServerOptions) as unknown as FastifyInstance // http2 apps too: the tests only use the common surface
  await app.register(clusterDrain, drain)
  app.get('/', async () => ({ hello: 'world' }))
  routes(app)
  return { app, logs }
}

export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export interface RawResponse { status: number, headers: Record<string, string>, body: string }

/**
 * One real keep-alive TCP connection speaking HTTP/1.1 by hand, so a test sees exactly which
 * socket a response came on, its Connection header, and when the server closed it.
 */
export class RawClient {
  readonly socket: Socket
  readonly closed: Promise<number>
  closedAt = 0
  error: Error | null = null
  private buffer = ''
  private waiting: ((r: RawResponse) => void) | null = null
  private failing: ((e: Error) => void) | null = null

  private constructor (socket: Socket) {
    this.socket = socket
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { this.buffer += chunk; this.parse() })
    socket.on('error', (err) => { this.error = err })
    this.closed = once(socket, 'close').then(() => {
      this.closedAt = Date.now()
      this.failing?.(this.error ?? new Error('socket closed before a full response'))
      return this.closedAt
    })
  }

  static async connect (port: number): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port })
    await once(socket, 'connect')
    return new RawClient(socket)
  }

  /** Send one request and wait for its full response (Content-Length framed). */
  request (path: string, method = 'GET'): Promise<RawResponse> {
    const p = new Promise<RawResponse>((resolve, reject) => { this.waiting = resolve; this.failing = reject })
    this.socket.write(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`)
    return p
  }

  private parse (): void {
    const end = this.buffer.indexOf('\r\n\r\n')
    if (end === -1 || this.waiting === null) return
    const [statusLine = '', ...lines] = this.buffer.slice(0, end).split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const i = line.indexOf(':')
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    if (this.buffer.length < end + 4 + length) return
    const body = this.buffer.slice(end + 4, end + 4 + length)
    this.buffer = this.buffer.slice(end + 4 + length)
    const resolve = this.waiting
    this.waiting = null
    this.failing = null
    resolve({ status: Number(statusLine.split(' ')[1]), headers, body })
  }
}

/** Resolves with the error code of a fresh connection attempt, or 'connected'. */
export async function tryConnect (port: number): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port })
  try {
    await once(socket, 'connect')
    return 'connected'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error'
  } finally {
    socket.destroy()
  }
}

export function deferred<T = void> (): { promise: Promise<T>, resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}
