import type { RequestHandler, WorkerContext } from '../types.js'
import { isPrimaryMessage, message, type ReplyMessage } from '../messages.js'

/**
 * The worker half of the request/reply channel. Plugins register a handler by channel name
 * (`onPrimaryRequest('pidmetrics:scrape', () => registry.metrics())`); the primary calls it with
 * `handle.request()` / `handle.requestAll()`, each with its own timeout.
 */
interface ChannelState { handlers: Map<string, RequestHandler>, context: WorkerContext | undefined, installed: boolean }
// One state per process, not per module copy: a CommonJS app loads dist/cjs/ while the `nclust` bin
// (or an ESM entry) runs dist/; a plugin that registers its handler through one copy must be
// answered by the channel the other copy installed (the dual-package hazard).
const STATE = Symbol.for('@nclust/fastify-cluster:channel')
const state: ChannelState = ((globalThis as Record<symbol, unknown>)[STATE] as ChannelState | undefined) ??
  ((globalThis as Record<symbol, unknown>)[STATE] = { handlers: new Map(), context: undefined, installed: false }) as ChannelState
const handlers = state.handlers

/** Register the handler for `channel`; returns a function that removes it. Last registration wins. */
export function onPrimaryRequest (channel: string, handler: RequestHandler): () => void {
  if (typeof channel !== 'string' || channel.length === 0) throw new TypeError('onPrimaryRequest: channel must be a non-empty string')
  if (typeof handler !== 'function') throw new TypeError('onPrimaryRequest: handler must be a function')
  handlers.set(channel, handler)
  return () => {
    if (handlers.get(channel) === handler) handlers.delete(channel)
  }
}

/** The context of the worker running in this process, or undefined outside `startClustered`. */
export function currentWorker (): WorkerContext | undefined {
  return state.context
}

export function setCurrentWorker (ctx: WorkerContext): void {
  state.context = ctx
}

/** Answer the primary's requests on `process` (forked workers only). Idempotent. */
export function installChannel (): void {
  if (state.installed || typeof process.send !== 'function') return
  state.installed = true
  process.on('message', (raw: unknown) => {
    if (!isPrimaryMessage(raw) || raw.type !== 'request') return
    const { id, channel, payload } = raw
    const handler = handlers.get(channel)
    const reply = (m: Omit<ReplyMessage, 'nclust' | 'type' | 'id'>): void => {
      if (process.connected) process.send?.(message<ReplyMessage>({ type: 'reply', id, ...m }))
    }
    if (handler === undefined) {
      reply({ ok: false, error: `no handler for channel "${channel}" in worker ${state.context?.workerId ?? '?'}` })
      return
    }
    Promise.resolve()
      .then(() => handler(payload))
      .then((value) => reply({ ok: true, payload: value }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.message : String(err) }))
  })
}
