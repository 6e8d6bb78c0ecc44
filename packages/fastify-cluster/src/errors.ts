import { createError } from '@fastify/error'

/**
 * Every error this package throws, one catalogue (documented in the README's "Errors" section,
 * checked by a test). Codes are `NCLUST_CLUSTER_*` (`NCLUST_DRAIN_*`, `NCLUST_PIDMETRICS_*` in the
 * other two packages), so callers match on `err.code`, not on message text. A bad option, flag or
 * env var says `<option, --flag or env VAR> must be <what is allowed>, got <value>`, the template
 * the three packages share.
 */
export const errors = {
  /** An option, flag or env var has a value outside what is allowed. */
  NCLUST_CLUSTER_INVALID_OPTION: createError<'NCLUST_CLUSTER_INVALID_OPTION', [string, string, string]>('NCLUST_CLUSTER_INVALID_OPTION', '%s must be %s, got %s', 500, TypeError),
  /** An option key that `startClustered` does not know (most often a typo). */
  NCLUST_CLUSTER_UNKNOWN_OPTION: createError<'NCLUST_CLUSTER_UNKNOWN_OPTION', [string, string]>('NCLUST_CLUSTER_UNKNOWN_OPTION', 'unknown option %s, expected one of %s', 500, TypeError),
  /** The app is not a `buildApp` function or a module path, the module is missing or of the wrong shape, or `buildApp` did not return a Fastify instance. */
  NCLUST_CLUSTER_INVALID_APP: createError<'NCLUST_CLUSTER_INVALID_APP', [string]>('NCLUST_CLUSTER_INVALID_APP', '%s', 500, TypeError),
  /** The control socket cannot be set up where asked (its folder cannot be made, is not private, or the path is not a socket). */
  NCLUST_CLUSTER_CONTROL_PATH: createError<'NCLUST_CLUSTER_CONTROL_PATH', [string]>('NCLUST_CLUSTER_CONTROL_PATH', '%s'),
  /** The control socket path is held by another running cluster. */
  NCLUST_CLUSTER_CONTROL_IN_USE: createError<'NCLUST_CLUSTER_CONTROL_IN_USE', [string]>('NCLUST_CLUSTER_CONTROL_IN_USE', '%s'),
  /** A control socket request the primary refuses; `controlCode` is the protocol's error code (`bad-request`, `version`, ...). */
  NCLUST_CLUSTER_CONTROL_REFUSED: createError<'NCLUST_CLUSTER_CONTROL_REFUSED', [string]>('NCLUST_CLUSTER_CONTROL_REFUSED', '%s'),
  /** A request over IPC got no reply within its timeout. */
  NCLUST_CLUSTER_REQUEST_TIMEOUT: createError<'NCLUST_CLUSTER_REQUEST_TIMEOUT', [number | string, string, number]>('NCLUST_CLUSTER_REQUEST_TIMEOUT', 'worker %s did not answer "%s" within %sms'),
  /** A request over IPC went to a worker that is not (or no longer) running. */
  NCLUST_CLUSTER_WORKER_GONE: createError<'NCLUST_CLUSTER_WORKER_GONE', [number | string, string]>('NCLUST_CLUSTER_WORKER_GONE', 'worker %s is not running (%s)'),
  /** The worker's handler for a channel failed or does not exist. */
  NCLUST_CLUSTER_REQUEST_FAILED: createError<'NCLUST_CLUSTER_REQUEST_FAILED', [number | string, string, string]>('NCLUST_CLUSTER_REQUEST_FAILED', 'worker %s failed "%s": %s'),
  /** The supervisor shut down before every slot became ready. */
  NCLUST_CLUSTER_SHUTDOWN: createError<'NCLUST_CLUSTER_SHUTDOWN', [string]>('NCLUST_CLUSTER_SHUTDOWN', 'the cluster shut down (%s) before every worker was ready')
} as const

export type NclustErrorCode = keyof typeof errors

/** A control socket refusal carrying the protocol's error code for the reply. */
export class ControlRefusal extends errors.NCLUST_CLUSTER_CONTROL_REFUSED {
  constructor (readonly controlCode: string, message: string) { super(message) }
}

/** A bad value, shown briefly: strings quoted, objects as JSON (cut at 80 characters). */
export function show (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Object.is(value, -0)) return '-0'
  if (value === null || typeof value !== 'object') return String(value)
  try {
    const s = JSON.stringify(value)
    return s.length > 80 ? `${s.slice(0, 77)}...` : s
  } catch { return 'an object' }
}
