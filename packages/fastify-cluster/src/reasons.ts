/**
 * The reasons the supervisor reports, as runtime lists: the types are derived from them, and
 * `@nclust/fastify-pidmetrics` pre-sets its counters' label values from them, so a reason added
 * here reaches the metrics without anyone remembering to list it twice.
 */

/** Why a worker exited (`worker-exit` event). `requested` exits are never replaced; every other one is (`restart` event). */
export const EXIT_REASONS = ['requested', 'recycle', 'crash', 'signal', 'hung', 'start-timeout', 'start-failed'] as const

/** The exit reasons that lead to a replacement: every one but `requested`. */
export const RESTART_REASONS = EXIT_REASONS.filter((r): r is Exclude<typeof r, 'requested'> => r !== 'requested')

/**
 * Why the whole cluster shut down (`shutdown` event): a signal, `close()`, a crash loop, a slot that
 * never started (`start-failed`, the fast start verdict), or an uncaught error in the primary (`fatal`).
 */
export const SHUTDOWN_REASONS = ['signal', 'close', 'crash-loop', 'start-failed', 'fatal'] as const
