import { createError } from '@fastify/error'

/**
 * Every error this package throws, one catalogue (documented in the README's "Errors" section,
 * checked by a test). Codes are `NCLUST_PIDMETRICS_*`; a bad option or env var says
 * `<option or env VAR> must be <what is allowed>, got <value>`, the template all three nclust
 * packages share, e.g. `option buckets must be a non-empty array of increasing finite numbers (seconds), got [1,0.5]`.
 */
export const errors = {
  /** An option or env var has a value outside what is allowed (at registration, or from `clusterMetrics`). */
  NCLUST_PIDMETRICS_INVALID_OPTION: createError<'NCLUST_PIDMETRICS_INVALID_OPTION', [string, string, string]>('NCLUST_PIDMETRICS_INVALID_OPTION', '%s must be %s, got %s', 500, TypeError),
  /** An option key the plugin or `clusterMetrics` does not know (most often a typo). */
  NCLUST_PIDMETRICS_UNKNOWN_OPTION: createError<'NCLUST_PIDMETRICS_UNKNOWN_OPTION', [string, string]>('NCLUST_PIDMETRICS_UNKNOWN_OPTION', 'unknown option %s, expected one of %s', 500, TypeError),
  /** The registry already holds the metrics this plugin creates (plugin registered twice on one registry). */
  NCLUST_PIDMETRICS_DUPLICATE: createError<'NCLUST_PIDMETRICS_DUPLICATE', [string]>('NCLUST_PIDMETRICS_DUPLICATE',
    'the registry already has a metric named "%s": register pidMetrics once per registry, or pass `registry: new Registry()` to each app that runs in the same process'),
  /** `clusterMetrics()` got something that is not the handle `startClustered()` returned. */
  NCLUST_PIDMETRICS_HANDLE: createError<'NCLUST_PIDMETRICS_HANDLE', [string]>('NCLUST_PIDMETRICS_HANDLE', 'clusterMetrics(handle): %s', 500, TypeError)
} as const

/** Kept for code written against 0.x: the same constructors as `errors.NCLUST_PIDMETRICS_*`. */
export const PidMetricsOptionError = errors.NCLUST_PIDMETRICS_INVALID_OPTION
export const PidMetricsDuplicateError = errors.NCLUST_PIDMETRICS_DUPLICATE
export const PidMetricsHandleError = errors.NCLUST_PIDMETRICS_HANDLE

/** Throw the one-line error for a bad option (`name`) or env var (`env NAME`). */
export function bad (name: string, value: unknown, allowed: string): never {
  throw new errors.NCLUST_PIDMETRICS_INVALID_OPTION(name.startsWith('env ') || name === 'options' ? name : `option ${name}`, allowed, show(value))
}

/** Throw for an option key that is not one of `known`. */
export function unknownOption (name: string, known: Iterable<string>): never {
  throw new errors.NCLUST_PIDMETRICS_UNKNOWN_OPTION(name, [...known].join(', '))
}

/** Show a bad option value in an error message, briefly. */
export function show (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Object.is(value, -0)) return '-0'
  if (value === undefined) return 'undefined'
  try {
    const s = JSON.stringify(value)
    if (s === undefined) return String(value)
    return s.length > 80 ? s.slice(0, 77) + '...' : s
  } catch {
    return String(value)
  }
}
