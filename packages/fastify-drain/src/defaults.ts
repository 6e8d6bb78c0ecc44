/**
 * Defaults of the timing options (one list: `resolveOptions` and `@nclust/fastify-cluster` read it).
 * A module of its own, importing nothing, so the cluster primary can read the defaults through
 * `@nclust/fastify-drain/defaults` without loading the plugin, fastify-plugin and @fastify/error.
 */
export const DRAIN_DEFAULTS = { timeout: 25_000, delay: 0, linger: 250, websocketGrace: 1000 } as const
