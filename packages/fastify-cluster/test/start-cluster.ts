/** Start the fixture app as a real primary with real workers, for this package's cluster tests. */
import { fileURLToPath } from 'node:url'
import { freePort, spawnNode, waitFor, type LogLine, type Spawned } from '../../../test/helpers/index.ts'

export const fixture = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))
export const primaryReady = (l: LogLine): boolean => l.role === 'primary' && l.msg === 'worker ready'

/** Spawn the fixture (killed when the test ends) and wait until `workers` are ready. */
export async function startCluster (
  t: { after: (fn: () => Promise<void>) => void }, env: Record<string, string> = {}, workers = 2, opts: { detached?: boolean } = {}
): Promise<{ p: Spawned, port: number }> {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: String(workers), PORT: String(port), HOST: '127.0.0.1', ...env }, ...opts })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= workers, `${workers} workers ready`, 90_000)
  return { p, port }
}
