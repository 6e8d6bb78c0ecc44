import type { RequestOptions, RequestResult } from '../types.js'
import { errors } from '../errors.js'
import { FLUSH_CHANNEL, message, type ReplyMessage, type RequestMessage } from '../messages.js'
import type { Proc, SlotMachine } from './slots.js'

interface Pending {
  proc: Proc
  channel: string
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/** The primary's half of the request/reply channel over IPC, with a timeout per worker. */
export function createRequests (m: SlotMachine): {
  request: <T>(workerId: number, channel: string, payload?: unknown, opts?: RequestOptions) => Promise<T>
  requestAll: <T>(channel: string, payload?: unknown, opts?: RequestOptions) => Promise<Array<RequestResult<T>>>
} {
  const pending = new Map<number, Pending>()
  let nextId = 1

  m.onMessage((proc, msg) => {
    if (msg.type === 'request' && msg.channel === FLUSH_CHANNEL) {
      // A worker about to exit flushes its IPC channel (see worker.ts): answer at once.
      if (proc.worker.isConnected()) proc.worker.send(message<ReplyMessage>({ type: 'reply', id: msg.id, ok: true }), () => {})
      return
    }
    if (msg.type !== 'reply') return
    const p = pending.get(msg.id)
    if (p === undefined || p.proc !== proc) return
    pending.delete(msg.id)
    clearTimeout(p.timer)
    if (msg.ok) p.resolve(msg.payload)
    else p.reject(new errors.NCLUST_CLUSTER_REQUEST_FAILED(proc.slot.id, p.channel, msg.error ?? 'unknown error'))
  })
  m.events.on('worker-exit', (e) => {
    for (const [id, p] of pending) {
      if (p.proc.pid !== e.pid) continue
      pending.delete(id)
      clearTimeout(p.timer)
      p.reject(new errors.NCLUST_CLUSTER_WORKER_GONE(e.workerId, `exited with ${e.signal ?? e.code ?? '?'}`))
    }
  })

  function request<T> (workerId: number, channel: string, payload?: unknown, opts: RequestOptions = {}): Promise<T> {
    const timeout = opts.timeout ?? 1000
    const proc = m.slots[workerId]?.current
    if (proc === undefined || !proc.worker.isConnected()) {
      return Promise.reject(new errors.NCLUST_CLUSTER_WORKER_GONE(workerId, 'no live process in this slot'))
    }
    const id = nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new errors.NCLUST_CLUSTER_REQUEST_TIMEOUT(workerId, channel, timeout))
      }, timeout)
      pending.set(id, { proc, channel, resolve: resolve as (v: unknown) => void, reject, timer })
      proc.worker.send(message<RequestMessage>({ type: 'request', id, channel, payload }), (err) => {
        if (err === null || !pending.has(id)) return
        pending.delete(id)
        clearTimeout(timer)
        reject(new errors.NCLUST_CLUSTER_WORKER_GONE(workerId, err.message))
      })
    })
  }

  async function requestAll<T> (channel: string, payload?: unknown, opts: RequestOptions = {}): Promise<Array<RequestResult<T>>> {
    const targets = m.slots.flatMap((s) => s.current !== undefined && s.current.state === 'ready' ? [s.current] : [])
    return await Promise.all(targets.map(async (proc): Promise<RequestResult<T>> => {
      // hrtime, not performance.now(): the global `performance` loads perf_hooks into the lean primary.
      const t0 = process.hrtime.bigint()
      const ms = (): number => Number(process.hrtime.bigint() - t0) / 1e6
      try {
        const value = await request<T>(proc.slot.id, channel, payload, opts)
        return { workerId: proc.slot.id, pid: proc.pid, ok: true, value, ms: ms() }
      } catch (err) {
        return { workerId: proc.slot.id, pid: proc.pid, ok: false, error: (err as Error).message, ms: ms() }
      }
    }))
  }

  return { request, requestAll }
}
