import { createError } from '@fastify/error'

/**
 * Thrown at registration (or by `clusterMetrics`) when an option is wrong. The message names the
 * option, shows the bad value and says what is allowed, e.g.
 * `FST_PIDMETRICS_OPTION: option "buckets" is [1, 0.5]: expected a non-empty array of increasing finite numbers`.
 */
export const PidMetricsOptionError = createError<[string, string, string]>(
  'FST_PIDMETRICS_OPTION',
  'option "%s" is %s: expected %s',
  500,
  TypeError
)

/** The registry already holds the metrics this plugin creates (plugin registered twice on one registry). */
export const PidMetricsDuplicateError = createError<[string]>(
  'FST_PIDMETRICS_DUPLICATE',
  'the registry already has a metric named "%s": register pidMetrics once per registry, or pass `registry: new Registry()` to each app that runs in the same process',
  500
)

/** `clusterMetrics()` got something that is not the handle `startClustered()` returned. */
export const PidMetricsHandleError = createError<[string]>(
  'FST_PIDMETRICS_HANDLE',
  'clusterMetrics(handle): %s',
  500,
  TypeError
)

/** Show a bad option value in an error message, briefly. */
export function show (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (value === undefined) return 'undefined'
  try {
    const s = JSON.stringify(value)
    if (s === undefined) return String(value)
    return s.length > 80 ? s.slice(0, 77) + '...' : s
  } catch {
    return String(value)
  }
}
