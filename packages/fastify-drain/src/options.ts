import type { FastifyBaseLogger } from 'fastify'
import { DRAIN_DEFAULTS, minDrainTimeout } from './defaults.js'
import { errors, show } from './errors.js'

/** Kept for code written against 0.x: the same constructors as `errors.NCLUST_DRAIN_*`. */
export const InvalidOptionError = errors.NCLUST_DRAIN_INVALID_OPTION
export const ServerOptionError = errors.NCLUST_DRAIN_SERVER_OPTION

export interface ResolvedOptions {
  timeout: number
  delay: number
  linger: number
  readinessPath: string | null
  retryAfter: number
  websocketGrace: number
  logger: FastifyBaseLogger | undefined
}

const KNOWN = new Set(['timeout', 'delay', 'linger', 'readiness', 'retryAfter', 'websocketGrace', 'logger'])

export { DRAIN_DEFAULTS }
const MAX_TIMER = 2_147_483_647
const invalid = (name: string, allowed: string, value: unknown): Error => new errors.NCLUST_DRAIN_INVALID_OPTION(`option ${name}`, allowed, show(value))

function ms (opts: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const value = opts[name]
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMER) {
    throw invalid(name, `an integer number of ms from ${min} to ${MAX_TIMER}`, value)
  }
  return value
}

/** Validates everything up front, so a typo fails at register time and not on the first SIGTERM. */
export function resolveOptions (input: unknown): ResolvedOptions {
  if (input === undefined || input === null) input = {}
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new errors.NCLUST_DRAIN_INVALID_OPTION('options', 'an object or nothing', show(input))
  }
  const opts = input as Record<string, unknown>
  for (const key of Object.keys(opts)) {
    if (!KNOWN.has(key)) throw new errors.NCLUST_DRAIN_UNKNOWN_OPTION(key, [...KNOWN].join(', '))
  }
  const timeout = ms(opts, 'timeout', DRAIN_DEFAULTS.timeout, 1)
  const delay = ms(opts, 'delay', DRAIN_DEFAULTS.delay, 0)
  const linger = ms(opts, 'linger', DRAIN_DEFAULTS.linger, 0)
  // The timing rule, shared with @nclust/fastify-cluster through ./defaults: delay and linger end before the deadline.
  if (timeout < minDrainTimeout({ delay, linger })) {
    const [name, value] = delay >= linger ? ['delay', delay] : ['linger', linger]
    throw invalid(name, `below timeout (${timeout}), or nothing would be left to drain in`, value)
  }
  // Not checked against timeout: the deadline cuts whatever is left anyway, and the cluster derives
  // timeout from shutdownTimeout, where a short one must not make every worker fail at start.
  const websocketGrace = ms(opts, 'websocketGrace', DRAIN_DEFAULTS.websocketGrace, 0)

  let readinessPath: string | null = null
  const readiness = opts.readiness
  if (readiness !== undefined && readiness !== false) {
    const path = typeof readiness === 'object' && readiness !== null ? (readiness as { path?: unknown }).path : undefined
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw invalid('readiness', 'false or { path: "/ready" } (a path starting with "/")', readiness)
    }
    readinessPath = path
  }

  const retryAfter = opts.retryAfter ?? 1
  if (typeof retryAfter !== 'number' || !Number.isInteger(retryAfter) || retryAfter < 0) {
    throw invalid('retryAfter', 'a non-negative integer number of seconds', retryAfter)
  }

  const logger = opts.logger
  if (logger !== undefined) {
    const l = logger as Record<string, unknown>
    if (typeof logger !== 'object' || logger === null || typeof l.info !== 'function' || typeof l.warn !== 'function' || typeof l.error !== 'function') {
      throw invalid('logger', 'a pino-like logger with info, warn and error methods', logger)
    }
  }

  return { timeout, delay, linger, readinessPath, retryAfter, websocketGrace, logger: logger as FastifyBaseLogger | undefined }
}
