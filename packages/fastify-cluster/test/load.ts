/**
 * Bounded keep-alive load for the lifecycle tests: `clients` connections, each sending one request
 * at a time to `/slow?ms=<50..200>` until `stop()` (or `maxMs`, whichever comes first). Every
 * response and every error is counted, with the pid that answered and the time.
 */
import { Pool } from 'undici'

export interface LoadResult {
  total: number
  ok: number
  statuses: Map<number, number>
  /** Socket-level failures (reset, closed, timeout) and non-200 answers, with the time they happened. */
  errors: Array<{ at: number, sent: number, error: string }>
  /** Time and pid of every 200. */
  answers: Array<{ at: number, pid: number }>
  pids: Set<number>
}

export interface Load {
  /** Responses and errors so far (live). */
  readonly result: LoadResult
  stop: () => Promise<LoadResult>
}

export function load (port: number, opts: { clients?: number, minMs?: number, maxMs?: number, path?: string, durationCap?: number } = {}): Load {
  const clients = opts.clients ?? 50
  const minMs = opts.minMs ?? 50
  const maxMs = opts.maxMs ?? 200
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: clients, pipelining: 1, keepAliveTimeout: 60000, headersTimeout: 30000, bodyTimeout: 30000 })
  const result: LoadResult = { total: 0, ok: 0, statuses: new Map(), errors: [], answers: [], pids: new Set() }
  const state = { running: true }
  const cap = setTimeout(() => { state.running = false }, opts.durationCap ?? 180000)
  const loops = Array.from({ length: clients }, async () => {
    while (state.running) {
      const ms = minMs + Math.floor(Math.random() * (maxMs - minMs + 1))
      const sent = Date.now()
      try {
        const res = await pool.request({ path: `${opts.path ?? '/slow'}?ms=${ms}`, method: 'GET' })
        const body = await res.body.text()
        result.statuses.set(res.statusCode, (result.statuses.get(res.statusCode) ?? 0) + 1)
        if (res.statusCode === 200) {
          const pid = (JSON.parse(body) as { pid: number }).pid
          result.ok += 1
          result.pids.add(pid)
          result.answers.push({ at: Date.now(), pid })
        } else {
          result.errors.push({ at: Date.now(), sent, error: `status ${res.statusCode}` })
        }
      } catch (err) {
        result.errors.push({ at: Date.now(), sent, error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}` })
      }
      result.total += 1
    }
  })
  let stopped: Promise<LoadResult> | undefined
  return {
    result,
    stop () {
      stopped ??= (async () => {
        state.running = false
        clearTimeout(cap)
        await Promise.all(loops)
        await pool.close()
        return result
      })()
      return stopped
    }
  }
}
