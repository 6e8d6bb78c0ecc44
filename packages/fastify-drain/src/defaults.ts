/**
 * Defaults of the timing options, and the drain's timing rule (one place: `resolveOptions` and
 * `@nclust/fastify-cluster` read both). A module of its own, importing nothing, so the cluster
 * primary can read them through `@nclust/fastify-drain/defaults` without loading the plugin,
 * fastify-plugin and @fastify/error.
 */
export const DRAIN_DEFAULTS = { timeout: 25_000, delay: 0, linger: 250, websocketGrace: 1000 } as const

/**
 * The smallest `timeout` the drain accepts with these `delay` and `linger` (defaults where not
 * given): both must end before the deadline, or nothing would be left to drain in.
 */
export function minDrainTimeout (options: { delay?: number | undefined, linger?: number | undefined } = {}): number {
  return Math.max(options.delay ?? DRAIN_DEFAULTS.delay, options.linger ?? DRAIN_DEFAULTS.linger) + 1
}
