import { createError } from '@fastify/error'
import type { FastifyBaseLogger } from 'fastify'
import { DRAIN_DEFAULTS } from './defaults.js'

export const InvalidOptionError = createError<'NCLUST_DRAIN_INVALID_OPTION', [string, string, string]>(
  'NCLUST_DRAIN_INVALID_OPTION',
  '@nclust/fastify-drain: option "%s" is %s; %s',
  500,
  TypeError
)

export const ServerOptionError = createError<'NCLUST_DRAIN_SERVER_OPTION', [string]>(
  'NCLUST_DRAIN_SERVER_OPTION',
  '@nclust/fastify-drain: %s'
)

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

function show (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (value === null || typeof value !== 'object') return String(value)
  try { return JSON.stringify(value) } catch { return 'an object' }
}

function ms (opts: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const value = opts[name]
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMER) {
    throw new InvalidOptionError(name, show(value), `expected an integer number of milliseconds from ${min} to ${MAX_TIMER}`)
  }
  return value
}

/** Validates everything up front, so a typo fails at register time and not on the first SIGTERM. */
export function resolveOptions (input: unknown): ResolvedOptions {
  if (input === undefined || input === null) input = {}
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidOptionError('(options)', show(input), 'expected an object or nothing')
  }
  const opts = input as Record<string, unknown>
  for (const key of Object.keys(opts)) {
    if (!KNOWN.has(key)) throw new InvalidOptionError(key, 'unknown', `allowed: ${[...KNOWN].join(', ')}`)
  }
  const timeout = ms(opts, 'timeout', DRAIN_DEFAULTS.timeout, 1)
  const delay = ms(opts, 'delay', DRAIN_DEFAULTS.delay, 0)
  const linger = ms(opts, 'linger', DRAIN_DEFAULTS.linger, 0)
  if (delay >= timeout) {
    throw new InvalidOptionError('delay', show(delay), `it must be below timeout (${timeout}) or nothing would be left to drain in`)
  }
  // Not checked against timeout: the deadline cuts whatever is left anyway, and the cluster derives
  // timeout from shutdownTimeout, where a short one must not make every worker fail at start.
  const websocketGrace = ms(opts, 'websocketGrace', DRAIN_DEFAULTS.websocketGrace, 0)
  if (linger >= timeout) {
    throw new InvalidOptionError('linger', show(linger), `it must be below timeout (${timeout})`)
  }

  let readinessPath: string | null = null
  const readiness = opts.readiness
  if (readiness !== undefined && readiness !== false) {
    const path = typeof readiness === 'object' && readiness !== null ? (readiness as { path?: unknown }).path : undefined
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new InvalidOptionError('readiness', show(readiness), 'expected false or { path: "/ready" } (a path starting with "/")')
    }
    readinessPath = path
  }

  const retryAfter = opts.retryAfter ?? 1
  if (typeof retryAfter !== 'number' || !Number.isInteger(retryAfter) || retryAfter < 0) {
    throw new InvalidOptionError('retryAfter', show(retryAfter), 'expected a non-negative integer number of seconds')
  }

  const logger = opts.logger
  if (logger !== undefined) {
    const l = logger as Record<string, unknown>
    if (typeof logger !== 'object' || logger === null || typeof l.info !== 'function' || typeof l.warn !== 'function' || typeof l.error !== 'function') {
      throw new InvalidOptionError('logger', show(logger), 'expected a pino-like logger with info, warn and error methods')
    }
  }

  return { timeout, delay, linger, readinessPath, retryAfter, websocketGrace, logger: logger as FastifyBaseLogger | undefined }
}
