import { createError } from '@fastify/error'

/**
 * Every error this package throws, one catalogue (documented in the README's "Errors" section,
 * checked by a test). Codes are `NCLUST_DRAIN_*`; a bad option says
 * `<option> must be <what is allowed>, got <value>`, the template all three nclust packages share.
 */
export const errors = {
  /** An option has a value outside what is allowed. */
  NCLUST_DRAIN_INVALID_OPTION: createError<'NCLUST_DRAIN_INVALID_OPTION', [string, string, string]>('NCLUST_DRAIN_INVALID_OPTION', '%s must be %s, got %s', 500, TypeError),
  /** An option key the plugin does not know (most often a typo, which would silently keep a default). */
  NCLUST_DRAIN_UNKNOWN_OPTION: createError<'NCLUST_DRAIN_UNKNOWN_OPTION', [string, string]>('NCLUST_DRAIN_UNKNOWN_OPTION', 'unknown option %s, expected one of %s', 500, TypeError),
  /** The plugin was registered twice on one app. */
  NCLUST_DRAIN_SERVER_OPTION: createError<'NCLUST_DRAIN_SERVER_OPTION', [string]>('NCLUST_DRAIN_SERVER_OPTION', '@nclust/fastify-drain: %s')
} as const

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
