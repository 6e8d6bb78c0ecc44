import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, Pool, request } from 'undici'
import { freePort, spawnNode, waitFor, type LogLine } from '../../../test/helpers/index.ts'
import { samples } from './helpers.js'

/**
 * `nclust upgrade` of a primary that serves the cluster scrape (clusterMetrics): the scrape socket is
 * handed to the new primary like the HTTP and control sockets, so the same port answers from the new
 * primary's workers afterwards. Two scrapers run through the whole upgrade (one keep-alive, as
 * Prometheus scrapes, one new connection per scrape); every failed scrape is counted.
 */

const FIXTURE = fileURLToPath(new URL('./fixtures/cluster.mjs', import.meta.url))
const BIN = fileURLToPath(new URL('../../fastify-cluster/bin/nclust.js', import.meta.url))

interface Scrapes { ok: number, failed: number, errors: string[], last: Set<string> | undefined, sinceNew: number, newPids: Set<string> | undefined }

/** The worker pids a scrape shows (every `pid` label but the primary's own). */
function workerPids (body: string): Set<string> {
  const pids = new Set<string>()
  for (const list of samples(body).values()) for (const s of list) if (s.labels.pid !== undefined && s.labels.worker !== 'primary') pids.add(s.labels.pid)
  return pids
}

function scrapers (url: string): { counts: Scrapes, stop: () => Promise<void> } {
  const counts: Scrapes = { ok: 0, failed: 0, errors: [], last: undefined, sinceNew: 0, newPids: undefined }
  const state = { running: true }
  const pool = new Pool(new URL(url).origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 })
  const once = async (dispatcher: Pool | Agent): Promise<void> => {
    try {
      const res = await request(url, { dispatcher, headersTimeout: 30_000, bodyTimeout: 30_000 })
      const body = await res.body.text()
      if (res.statusCode !== 200) { counts.failed++; counts.errors.push(`status ${res.statusCode}`); return }
      counts.ok++
      const pids = workerPids(body)
      counts.last = pids
      const fresh = counts.newPids
      if (fresh !== undefined && [...pids].every((p) => fresh.has(p)) && pids.size === fresh.size) counts.sinceNew++
    } catch (err) {
      counts.failed++
      counts.errors.push(`${(err as { code?: string }).code ?? ''} ${(err as Error).message}`)
    }
  }
  const loops = [
    (async () => { while (state.running) await once(pool) })(),
    (async () => {
      while (state.running) {
        const agent = new Agent({ connections: 1 })
        await once(agent)
        await agent.close()
      }
    })()
  ]
  return { counts, stop: async () => { state.running = false; await Promise.all(loops); await pool.close() } }
}

test('nclust upgrade: the cluster scrape follows the new primary on the same port, and no scrape fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-scrape-upgrade-'))
  chmodSync(dir, 0o700)
  const control = join(dir, 'c.sock')
  const port = await freePort()
  const metricsPort = await freePort()
  const p = spawnNode(FIXTURE, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', FIXTURE_METRICS_PORT: String(metricsPort), NCLUST_CONTROL: control } })
  t.after(async () => { await p.cleanup(); rmSync(dir, { recursive: true, force: true }) })
  const isReady = (l: LogLine): boolean => l.msg === 'ready'
  const first = await p.waitForLine(isReady, 90_000, 'ready')
  const url = String(first.metricsUrl)
  assert.equal(url, `http://127.0.0.1:${metricsPort}/metrics`)
  const oldWorkers = new Set((first.workers as Array<{ pid: number }>).map((w) => String(w.pid)))

  const load = scrapers(url)
  await waitFor(() => load.counts.ok >= 10, '10 scrapes before the upgrade', 60_000)
  assert.deepEqual(load.counts.last, oldWorkers)

  const up = await new Promise<{ code: number, out: string }>((resolve) => {
    execFile(process.execPath, [BIN, 'upgrade', '--control', control], { timeout: 240_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), out: stdout + stderr })
    })
  })
  assert.equal(up.code, 0, `nclust upgrade: ${up.out}`)
  const second = await p.waitForLine((l) => isReady(l) && l.primaryPid !== first.primaryPid, 90_000, 'the new primary ready')
  p.track(Number(second.primaryPid))
  assert.equal(second.metricsUrl, url, 'the new primary serves the same scrape port')
  const newWorkers = new Set((second.workers as Array<{ pid: number }>).map((w) => String(w.pid)))
  for (const pid of newWorkers) assert.ok(!oldWorkers.has(pid))
  load.counts.newPids = newWorkers
  const exit = await p.waitForExit(90_000)
  assert.equal(exit.code, 0, 'the old primary drained and exited')
  // After the old primary is gone, every scrape on that port shows the new workers only.
  const from = load.counts.ok
  await waitFor(() => load.counts.ok >= from + 20, '20 scrapes after the old primary exited', 60_000)
  await load.stop()
  assert.deepEqual(load.counts.last, newWorkers)
  t.diagnostic(`scrapes ok ${load.counts.ok}, failed ${load.counts.failed}`)
  assert.equal(load.counts.failed, 0, `failed scrapes: ${load.counts.errors.slice(0, 5).join('; ')}`)
})
