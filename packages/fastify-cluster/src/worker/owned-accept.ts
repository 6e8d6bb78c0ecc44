import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Socket } from 'node:net'
import type { FastifyInstance, FastifyListenOptions } from 'fastify'
import { isPrimaryMessage } from '../messages.js'

/**
 * A worker of a primary that owns the listening socket (../primary/owned-listener.ts) takes its
 * connections from the primary and never accepts one itself. It still listens, on a unix socket in
 * a private folder of its own (0700, unpredictable name, removed at exit), so that the app sees what
 * it sees in every other mode: `onListen` hooks run, `app.server.listening` is true, and close()
 * closes a listening server. Nobody connects to it; `exclusive` keeps node:cluster from routing
 * that listen through the primary.
 */
export async function listenPrivately (app: FastifyInstance): Promise<void> {
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
    if (stopping && process.connected && process.send !== undefined) {
      process.send({ nclust: 1, type: CONNECTION_BACK }, handle, undefined, (err) => { if (err !== null) handle.destroy() })
      return
    }
    server.emit('connection', handle)
    handle.resume()
  })
}
