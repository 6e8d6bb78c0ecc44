/** Start a cluster fixture as a real primary with real workers, for this package's cluster tests. */
import { fileURLToPath } from 'node:url'
import { freePort, spawnNode, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'

/** A fixture of ./fixtures: `app.mjs` is the plain cluster, each other file one scenario (see fixtures/shared.mjs). */
export const fixturePath = (name = 'app.mjs'): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
export const fixture = fixturePath()
/** The fixtures print every supervisor event as a line (fixtures/shared.mjs); a worker's pid is `workerPid`. */
export const isEvent = (name: string) => (l: LogLine): boolean => l.role === 'event' && l.event === name
export const primaryReady = isEvent('worker-ready')
/** `nclust start` has no handle to listen on: its primary's log line is the record of a ready worker. */
export const primaryReadyLogged = (l: LogLine): boolean => l.role === 'primary' && l.msg === 'worker ready'

/** Spawn a fixture (app.mjs unless `opts.app`; killed when the test ends) and wait until `workers` are ready. */
export async function startCluster (
  t: { after: (fn: () => Promise<void>) => void }, env: Record<string, string> = {}, workers = 2, opts: { detached?: boolean, app?: string } = {}
): Promise<{ p: Spawned, port: number }> {
  const port = await freePort()
  const p = spawnNode(fixturePath(opts.app), { env: { WORKER_COUNT: String(workers), PORT: String(port), HOST: '127.0.0.1', ...env }, ...(opts.detached !== undefined ? { detached: opts.detached } : {}) })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= workers, `${workers} workers ready`, 90_000)
  return { p, port }
}

/** A worker exit the primary did not ask for (the `worker-exit` event; its log line says "unexpectedly"). */
export const unexpectedExit = (l: LogLine): boolean => isEvent('worker-exit')(l) && l.reason !== 'requested' && l.reason !== 'recycle'
