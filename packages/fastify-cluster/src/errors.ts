import { createError } from '@fastify/error'

/**
 * Every error this package throws, in one catalogue, with FST-style codes so callers can match on
 * `err.code` instead of on message text.
 */
export const errors = {
  /** An option or env var has a value outside what is allowed (message names it, the value and the rule). */
  NCLUST_INVALID_OPTION: createError('NCLUST_INVALID_OPTION', '%s', 500, TypeError),
  /** An option key that `startClustered` does not know (most often a typo). */
  NCLUST_UNKNOWN_OPTION: createError('NCLUST_UNKNOWN_OPTION', '%s', 500, TypeError),
  /** `buildApp` did not return a Fastify instance. */
  NCLUST_INVALID_APP: createError('NCLUST_INVALID_APP', '%s', 500, TypeError),
  /** A request over IPC got no reply within its timeout. */
  NCLUST_REQUEST_TIMEOUT: createError('NCLUST_REQUEST_TIMEOUT', 'worker %s did not answer "%s" within %sms'),
  /** A request over IPC went to a worker that is not (or no longer) running. */
  NCLUST_WORKER_GONE: createError('NCLUST_WORKER_GONE', 'worker %s is not running (%s)'),
  /** The worker's handler for a channel failed or does not exist. */
  NCLUST_REQUEST_FAILED: createError('NCLUST_REQUEST_FAILED', 'worker %s failed "%s": %s'),
  /** The supervisor shut down before every slot became ready. */
  NCLUST_SHUTDOWN: createError('NCLUST_SHUTDOWN', 'the cluster shut down (%s) before every worker was ready')
} as const

export type NclustErrorCode = keyof typeof errors
