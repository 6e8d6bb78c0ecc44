/**
 * Every IPC message between the primary and a worker, in one module both sides import.
 *
 * All messages carry `nclust: 1` so they never collide with messages the application sends over
 * the same channel (`process.send` / `worker.send`), and each has a `type` that discriminates the
 * union. Request/reply is correlated by `id`; the primary times out each request on its own.
 */

/** Env vars the primary sets on each fork (and nobody else should). Here so the primary need not import the worker's modules. */
export const WORKER_ENV = {
  id: 'NCLUST_WORKER_ID',
  generation: 'NCLUST_GENERATION',
  workers: 'NCLUST_WORKERS'
} as const

/** Worker → primary: the app is built and listening. */
export interface ReadyMessage {
  nclust: 1
  type: 'ready'
  pid: number
  workerId: number
  generation: number
  address: string | null
}

/** Worker → primary: a fatal error is about to end this worker (uncaught exception, unhandled rejection, failed start). */
export interface FatalMessage {
  nclust: 1
  type: 'fatal'
  reason: 'uncaughtException' | 'unhandledRejection' | 'startFailed'
  message: string
  stack?: string
}

/** Worker → primary: periodic liveness beat from the worker's event loop. */
export interface HeartbeatMessage {
  nclust: 1
  type: 'heartbeat'
  at: number
  /** Requests this worker has received so far (for maxRequests). */
  requests: number
  /** Resident set size in bytes (for maxRss). */
  rss: number
  /** Percent of one core used since the previous beat (for `nclust status`). */
  cpu?: number
  /** Event-loop utilisation, 0..1, since the previous beat (for `nclust status`). */
  elu?: number
}

/** Primary → worker: close the Fastify instance gracefully and exit 0. */
export interface ShutdownMessage {
  nclust: 1
  type: 'shutdown'
  /** Milliseconds the worker has before the primary SIGKILLs it. */
  deadline: number
  reason: 'signal' | 'close' | 'crash-loop' | 'start-failed' | 'fatal' | 'reload' | 'recycle' | 'scale' | 'start-timeout'
}

/** Either side → other: a typed request on the request/reply channel (e.g. "send me your metrics"). */
export interface RequestMessage {
  nclust: 1
  type: 'request'
  id: number
  /** Handler name, e.g. `pidmetrics:scrape`. */
  channel: string
  payload?: unknown
}

/** Answer to a {@link RequestMessage}; `ok: false` carries the handler's error message. */
export interface ReplyMessage {
  nclust: 1
  type: 'reply'
  id: number
  ok: boolean
  payload?: unknown
  error?: string
}

/**
 * balance 'kernel': a slot's SO_REUSEPORT listening socket, handed down its generations (the socket
 * itself travels as the IPC message's handle).
 * Worker → primary: `want: true` asks for the slot's socket; `want: false` gives the primary the socket it just opened.
 * Primary → worker: the answer, with the slot's socket, or without a handle when the slot has none yet.
 */
export interface ListenerMessage {
  nclust: 1
  type: 'listener'
  want: boolean
}

/**
 * balance 'sticky', primary → worker: a connection the primary accepted (paused, unread), as the
 * message's handle; the worker emits it on its server as if it had accepted it itself.
 */
export interface ConnectionMessage {
  nclust: 1
  type: 'connection'
  /** The client a PROXY protocol header named (proxyProtocol): the worker shows it as the socket's remote address. */
  peer?: { address: string, port: number, family: 'IPv4' | 'IPv6' }
  /** Base64 of the bytes read after the PROXY header: the worker's server reads them first. */
  head?: string
}

export type WorkerToPrimary = ReadyMessage | FatalMessage | HeartbeatMessage | ReplyMessage | RequestMessage | ListenerMessage
export type PrimaryToWorker = ShutdownMessage | RequestMessage | ReplyMessage | ListenerMessage | ConnectionMessage
export type NclustMessage = WorkerToPrimary | PrimaryToWorker

export function isNclustMessage (value: unknown): value is NclustMessage {
  return typeof value === 'object' && value !== null &&
    (value as { nclust?: unknown }).nclust === 1 &&
    typeof (value as { type?: unknown }).type === 'string'
}

export function isWorkerMessage (value: unknown): value is WorkerToPrimary {
  if (!isNclustMessage(value)) return false
  const t = value.type
  return t === 'ready' || t === 'fatal' || t === 'heartbeat' || t === 'reply' || t === 'request' || t === 'listener'
}

export function isPrimaryMessage (value: unknown): value is PrimaryToWorker {
  if (!isNclustMessage(value)) return false
  const t = value.type
  return t === 'shutdown' || t === 'request' || t === 'reply' || t === 'listener' || t === 'connection'
}

/** Worker → primary request answered at once by the primary: used to flush the IPC channel before a worker exits. */
export const FLUSH_CHANNEL = 'nclust:flush'

/** Primary → worker request of `nclust diagnose`: a report, heap snapshot or CPU profile written by the worker (worker/diagnose.ts). */
export const DIAGNOSE_CHANNEL = 'nclust:diagnose'

/** Build a message without repeating the `nclust: 1` tag at every call site. */
export function message<M extends NclustMessage> (m: Omit<M, 'nclust'>): M {
  return { nclust: 1, ...m } as M
}
