import type { FastifyBaseLogger } from 'fastify'

/** Options of `app.register(clusterDrain, options)`. Every field is optional. */
export interface DrainOptions {
  /** Deadline in ms for the whole drain (delay included), counted from the start of `app.close()`. Default 25000. */
  timeout?: number
  /** Ms to keep serving normally, with readiness already 503, before the listener stops. Default 0. */
  delay?: number
  /** Ms an idle keep-alive socket that just finished a response may stay open once the listener stopped. Default 250. */
  linger?: number
  /** `false` (default) or `{ path }`: a GET route answering 200 while serving and 503 once draining starts. */
  readiness?: false | { path: string }
  /** Seconds sent in `Retry-After` on the 503s the plugin itself answers. Default 1. */
  retryAfter?: number
  /**
   * Ms a WebSocket gets for its closing handshake after the drain sent its close frame (1012 for a
   * restart, 1001 otherwise), before it is terminated. The drain's `timeout` still wins. Default 1000.
   */
  websocketGrace?: number
  /** Logger for drain events. Default: the Fastify instance's logger. */
  logger?: FastifyBaseLogger
}

/** Where the drain is. `serving` → `delaying` (only if `delay` > 0) → `draining` → `closed`. */
export type DrainPhase = 'serving' | 'delaying' | 'draining' | 'closed'

/** Live, read-only view of the drain, decorated as `fastify.drain`. */
export interface DrainState {
  /** True from the moment `app.close()` starts. */
  readonly draining: boolean
  readonly phase: DrainPhase
  /** Requests whose response has not finished yet. */
  readonly inFlight: number
  /** Requests the plugin answered 503 (past the deadline, or arriving after the drain ended). */
  readonly rejected: number
  /** Sockets (and HTTP/2 sessions) destroyed at the deadline. */
  readonly destroyed: number
  /** Idle keep-alive sockets closed by the drain (after their linger). */
  readonly idleClosed: number
  /** True when the drain was started as a restart (`drainAndClose({ restart: true })`): WebSockets get 1012, not 1001. */
  readonly restart: boolean
  /** WebSockets the drain sent a close frame to (or waited for, when the app had closed them first). */
  readonly webSockets: number
  /** Aborted when draining starts: end SSE streams, long polls and WebSockets on it. */
  readonly signal: AbortSignal
}

declare module 'fastify' {
  interface FastifyInstance {
    drain: DrainState
    /**
     * Drain first, then `close()`: requests arriving on open connections during the drain are served
     * (with `Connection: close`) whatever `return503OnClosing` says, because Fastify is not flagged
     * closing until the sockets are gone. `restart: true` says the process is being replaced (a
     * reload): WebSockets are closed with 1012 (service restart) instead of 1001 (going away). Resolves when `close()` does (onClose hooks included).
     */
    drainAndClose: (options?: { restart?: boolean }) => Promise<void>
  }
  interface FastifyRequest {
    /** Same signal as `fastify.drain.signal`: aborted when draining starts. */
    readonly drainSignal: AbortSignal
  }
}
