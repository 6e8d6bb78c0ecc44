/**
 * The primary's half alone: `import { clusterMetrics } from '@nclust/fastify-pidmetrics/cluster'`
 * loads the cluster scrape without the worker plugin (fastify-metrics, Fastify hooks), for a lean primary.
 */
export { clusterMetrics, METRICS_LISTENER_NAME } from './cluster-metrics.js'
export type { ClusterMetricsOptions, ClusterMetricsServer } from './cluster-metrics.js'
export type { PrimaryLike } from './supervisor-metrics.js'
