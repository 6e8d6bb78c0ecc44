import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, FastifyListenOptions } from 'fastify'

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
