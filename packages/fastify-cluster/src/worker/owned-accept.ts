import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Socket } from 'node:net'
import type { FastifyInstance, FastifyListenOptions } from 'fastify'
import { isPrimaryMessage } from '../messages.js'

/**
 * A worker of a primary that owns the listening socket (../primary/owned-listener.ts) takes its
 * connections from the primary and never accepts one itself. It still listens, privately, so that
 * the app sees what it sees in every other mode: `onListen` hooks run, `app.server.listening` is
 * true, and close() closes a listening server. On Linux that is an abstract unix socket (no file:
 * it works on a read-only root, under Node's permission model and in a container without a writable
 * /tmp; an unguessable name), elsewhere a socket in a private folder (0700, removed at exit). Nobody
 * connects to it; `exclusive` keeps node:cluster from routing that listen through the primary.
 */
export async function listenPrivately (app: FastifyInstance): Promise<void> {
  if (process.platform === 'linux') {
    await app.listen({ path: `\0nclust-w-${process.pid}-${randomBytes(12).toString('hex')}`, exclusive: true } as FastifyListenOptions)
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'nclust-w-'))
  process.once('exit', () => { try { rmSync(dir, { recursive: true, force: true }) } catch {} })
  await app.listen({ path: join(dir, 'app.sock'), exclusive: true } as FastifyListenOptions)
}

/** Worker → primary: a connection handed to a worker that is already closing, given back to be handed on. */
export const CONNECTION_BACK = 'connection-back'

let stopping = false
/** Called once the worker starts closing (lifecycle.ts): from now on, connections go back to the primary. */
export function markStopping (): void { stopping = true }

/**
 * Take the connections the primary hands over. One that arrives once this worker is closing (a
 * signal, a fatal error, or the primary's shutdown crossing it on the channel) is given back, unread,
 * for another worker, as node:cluster's round robin does with a refused handle: Fastify would answer
 * its first request 503.
 */
export function acceptOwned (app: FastifyInstance): void {
  const server = app.server as unknown as { emit: (event: 'connection', socket: Socket) => boolean }
  process.on('message', (raw: unknown, handle: unknown) => {
    if (!isPrimaryMessage(raw) || raw.type !== 'connection' || !(handle instanceof Socket)) return
    // Closing and no longer listening (the drain's delay is over): give it back. During the delay the
    // server still accepts, as a listening server would, and answers readiness 503.
    if (stopping && !(app.server as { listening: boolean }).listening && process.connected && process.send !== undefined) {
      process.send({ nclust: 1, type: CONNECTION_BACK }, handle, undefined, (err) => { if (err !== null) handle.destroy() })
      return
    }
    server.emit('connection', handle)
    handle.resume()
  })
}
