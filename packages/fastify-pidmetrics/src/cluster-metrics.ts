import { closeSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Server } from 'node:http'
import { Server as NetServer, type AddressInfo } from 'node:net'
import { PidMetricsHandleError, bad, show, unknownOption } from './errors.js'
import { ClusterMerger, type Family, type ScrapeResult } from './merge.js'
import { formatFamilies, PROMETHEUS_CONTENT_TYPE } from './exposition.js'
import { RateWindow } from './imbalance.js'
import { DEFAULT_CHANNEL } from './options.js'
import { registerSupervisorMetrics, type PrimaryLike } from './supervisor-metrics.js'
import { measureEventLoopLag, primaryProcessMetrics } from './process-metrics.js'

// node:http by require(), not by an ESM import: on Node 22 and later, an ESM import of node:http
// builds its namespace from every export, which runs the lazy WebSocket/CloseEvent/MessageEvent
// getters and loads undici with http2, tls, zlib and worker_threads (~10 MB RSS in a primary that
// only serves this one endpoint; bench/primary-rss.mjs). require() leaves those getters alone.
const { createServer } = createRequire(import.meta.url)('node:http') as typeof import('node:http')

export interface ClusterMetricsOptions {
  /** Port of the primary's scrape endpoint. Default `METRICS_PORT` or 9091; 0 picks a free port. */
  port?: number
  /** Address to listen on. Default `METRICS_HOST` or `'127.0.0.1'` (loopback: set `0.0.0.0` or the pod/host address to let Prometheus in). */
  host?: string
  /** Path of the scrape endpoint. Default `'/metrics'`. */
  path?: string
  /** Milliseconds each worker gets to answer; a worker that misses it is reported down for this scrape. Default 1000. */
  timeout?: number
  /** `false` serves nothing (e.g. when each worker's own `/metrics` is the scrape target). Default `true`, unless `METRICS_PORT=off`. */
  enabled?: boolean
  /** Also export the primary process's own process/Node metrics, labelled `worker="primary"`. Default `true`. */
  primaryMetrics?: boolean
  /** Window of the per-worker request rates behind the imbalance gauges, in ms. Default 60000. */
  imbalanceWindow?: number
  /** IPC channel; must match the workers' `pidMetrics({ channel })`. Default `'pidmetrics:scrape'`. */
  channel?: string
}

/** What `clusterMetrics()` resolves to. */
export interface ClusterMetricsServer {
  /** False when nothing is served (single-process mode, worker role, `enabled: false`). */
  readonly enabled: boolean
  /** The bound port (useful with `port: 0`), undefined when disabled. */
  readonly port: number | undefined
  /** `http://host:port/path` of the endpoint, undefined when disabled. */
  readonly url: string | undefined
  /** Run one cluster scrape and return the exposition text (what a GET on the endpoint returns). */
  scrape (): Promise<string>
  /** Stop serving; also run by the cluster's shutdown. Idempotent. */
  close (): Promise<void>
}

interface Resolved { port: number, host: string, path: string, timeout: number, enabled: boolean, primaryMetrics: boolean, imbalanceWindow: number, channel: string }

export function resolveClusterMetricsOptions (raw: unknown, env: NodeJS.ProcessEnv = process.env): Resolved {
  if (raw === undefined || raw === null) raw = {}
  if (typeof raw !== 'object' || Array.isArray(raw)) bad('options', raw, 'an object')
  const o = raw as Record<string, unknown>
  const known = ['port', 'host', 'path', 'timeout', 'enabled', 'primaryMetrics', 'imbalanceWindow', 'channel']
  for (const k of Object.keys(o)) if (!known.includes(k)) unknownOption(k, known)

  let enabled = env.METRICS_PORT !== 'off'
  if (o.enabled !== undefined) {
    if (typeof o.enabled !== 'boolean') bad('enabled', o.enabled, 'true or false')
    enabled = o.enabled
  }
  let port = 9091
  if (o.port !== undefined) {
    if (typeof o.port !== 'number' || !Number.isInteger(o.port) || o.port < 0 || o.port > 65535) bad('port', o.port, 'an integer port 0-65535')
    port = o.port
  } else if (env.METRICS_PORT !== undefined && env.METRICS_PORT !== '' && env.METRICS_PORT !== 'off') {
    const n = /^\d+$/.test(env.METRICS_PORT) ? Number(env.METRICS_PORT) : NaN // not -0, 0x10, 1e3 or ' 80'
    if (!Number.isInteger(n) || n < 0 || n > 65535) bad('env METRICS_PORT', env.METRICS_PORT, 'an integer port 0-65535, or "off"')
    port = n
  }
  // Loopback by default: the scrape shows pids, versions and per-route/per-status counts, which is not
  // for the internet. Exposing it to Prometheus is a deliberate METRICS_HOST / `host`.
  let host = env.METRICS_HOST !== undefined && env.METRICS_HOST !== '' ? env.METRICS_HOST : '127.0.0.1'
  if (o.host !== undefined) {
    if (typeof o.host !== 'string' || o.host.length === 0) bad('host', o.host, 'a non-empty host name or address')
    host = o.host
  }
  let path = '/metrics'
  if (o.path !== undefined) {
    if (typeof o.path !== 'string' || !o.path.startsWith('/')) bad('path', o.path, 'a path starting with "/"')
    path = o.path
  }
  let timeout = 1000
  if (o.timeout !== undefined) {
    if (typeof o.timeout !== 'number' || !Number.isFinite(o.timeout) || o.timeout <= 0) bad('timeout', o.timeout, 'a positive number of milliseconds (keep it under Prometheus\'s scrape_timeout)')
    timeout = o.timeout
  }
  let primaryMetrics = true
  if (o.primaryMetrics !== undefined) {
    if (typeof o.primaryMetrics !== 'boolean') bad('primaryMetrics', o.primaryMetrics, 'true or false')
    primaryMetrics = o.primaryMetrics
  }
  let imbalanceWindow = 60_000
  if (o.imbalanceWindow !== undefined) {
    if (typeof o.imbalanceWindow !== 'number' || !Number.isFinite(o.imbalanceWindow) || o.imbalanceWindow < 1000) bad('imbalanceWindow', o.imbalanceWindow, 'a number of milliseconds >= 1000')
    imbalanceWindow = o.imbalanceWindow
  }
  let channel = DEFAULT_CHANNEL
  if (o.channel !== undefined) {
    if (typeof o.channel !== 'string' || o.channel.length === 0) bad('channel', o.channel, 'a non-empty string')
    channel = o.channel
  }
  return { port, host, path, timeout, enabled, primaryMetrics, imbalanceWindow, channel }
}

/** The LISTEN_FDNAMES name of the scrape socket, handed from an old primary to the new one on upgrade (or given by systemd). */
export const METRICS_LISTENER_NAME = 'nclust-metrics'

/**
 * Limits of the scrape server. Prometheus needs one connection per scraper, kept alive between
 * scrapes, and sends a small GET at once; nothing else should be able to hold the primary's sockets
 * or memory: at most `maxConnections` open sockets (more are closed at once), a request's headers must
 * arrive within `headersTimeout` and the whole request within `requestTimeout` (then 408 and close;
 * checked every second), and an idle keep-alive socket closes after `keepAliveTimeout` (longer than
 * any usual scrape interval, so a scraper keeps its connection).
 */
export const SCRAPE_SERVER_LIMITS = Object.freeze({ maxConnections: 32, headersTimeout: 5000, requestTimeout: 10_000, keepAliveTimeout: 65_000 })

const DISABLED: ClusterMetricsServer = Object.freeze({
  enabled: false,
  port: undefined,
  url: undefined,
  scrape: async () => '',
  close: async () => {}
})

/**
 * Serve one cluster-wide scrape from the primary. Call it with what `startClustered()` returned: in a
 * worker or in single-process mode it serves nothing and resolves to a disabled server (each worker's
 * own `/metrics` is then the target), so the same line can run in every role.
 */
export async function clusterMetrics (handle: unknown, options: ClusterMetricsOptions = {}): Promise<ClusterMetricsServer> {
  const opts = resolveClusterMetricsOptions(options)
  if (typeof handle !== 'object' || handle === null || typeof (handle as { role?: unknown }).role !== 'string') {
    throw new PidMetricsHandleError(`expected the handle startClustered() returns, got ${show(handle)}`)
  }
  const role = (handle as { role: string }).role
  if (role !== 'primary' || !opts.enabled) return DISABLED
  const h = handle as PrimaryLike
  for (const m of ['workers', 'requestAll', 'onClose'] as const) {
    if (typeof h[m] !== 'function') throw new PidMetricsHandleError(`a primary handle needs ${m}(); got ${typeof h[m]}`)
  }

  const supervisor = registerSupervisorMetrics(h)
  const processMetrics = opts.primaryMetrics ? primaryProcessMetrics() : undefined
  const merger = new ClusterMerger(() => Array.from({ length: h.size }, (_, i) => i))
  const window = new RateWindow(opts.imbalanceWindow)

  const scrapeOnce = async (): Promise<string> => {
    const started = process.hrtime.bigint()
    // Measured while the workers answer: it adds no time to the scrape.
    const lag = processMetrics !== undefined ? measureEventLoopLag() : undefined
    const results = await h.requestAll(opts.channel, undefined, { timeout: opts.timeout }) as ScrapeResult[]
    const merged = merger.merge(results)
    const spread = window.add(Date.now(), merged.requestTotals, Array.from({ length: h.size }, (_, i) => i))
    supervisor.recordScrape(merged.slots, Number(process.hrtime.bigint() - started) / 1e9, spread)
    const extra: Family[] = [
      ...supervisor.families(),
      ...(processMetrics !== undefined && lag !== undefined ? processMetrics.families(await lag) : [])
    ]
    // Merge again with the primary's families appended (same-named process metrics of the primary join the workers').
    return formatFamilies(mergeExtra(merged.families, extra))
  }
  // Concurrent GETs share one round of IPC: the merger's carried totals move one scrape at a time.
  let inflight: Promise<string> | undefined
  const scrape = (): Promise<string> => {
    inflight ??= scrapeOnce().finally(() => { inflight = undefined })
    return inflight
  }

  const limits = SCRAPE_SERVER_LIMITS
  let handedOver = false
  const server: Server = createServer({
    headersTimeout: limits.headersTimeout,
    requestTimeout: limits.requestTimeout,
    // Node checks the two timeouts every 30 s by default: a 5 s limit could take 35 s.
    connectionsCheckingInterval: 1000
  }, (req, res) => {
    const url = (req.url ?? '/').split('?')[0]
    if (url !== opts.path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: the cluster metrics are at ${opts.path}\n`)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (handedOver) res.shouldKeepAlive = false
    scrape().then((body) => {
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE })
      res.end(req.method === 'HEAD' ? undefined : body)
    }, (err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`cluster scrape failed: ${err instanceof Error ? err.message : String(err)}\n`)
    })
  })
  server.keepAliveTimeout = limits.keepAliveTimeout
  server.maxConnections = limits.maxConnections

  const listen = async (target: { fd: number } | { port: number, host: string }): Promise<void> => await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(target, () => {
      server.off('error', reject)
      resolve()
    })
  })
  // A socket handed over by the primary this one replaces (`nclust upgrade`), or by systemd under the
  // name nclust-metrics: serve it instead of binding, so the scrape follows the new primary with no
  // refused connection (the kernel's queue belongs to the socket, which never closes).
  const inherited = h.inheritedListener?.(METRICS_LISTENER_NAME)
  let served = false
  if (inherited !== undefined) {
    // From an upgrade, the old primary serves scrapes on this very socket until this one is ready
    // (scrapes wait in the queue, none is refused); a new primary that fails to start is killed, and
    // must not have accepted a scrape it would reset.
    const started = inherited.fromUpgrade && typeof h.ready === 'function' ? await h.ready().then(() => true, () => false) : true
    if (!started) {
      try { closeSync(inherited.fd) } catch {}
      return DISABLED // the cluster did not start; the supervisor said why
    }
    try {
      await listen({ fd: inherited.fd })
      served = true
    } catch {}
    // A changed METRICS_PORT: the old port's socket closes here (the old primary has let it go) and the new one is bound.
    if (served && opts.port !== 0 && (server.address() as AddressInfo | null)?.port !== opts.port) {
      server.close()
      server.closeAllConnections()
      served = false
    } else if (!served) {
      try { closeSync(inherited.fd) } catch {}
    }
  }
  if (!served) await listen({ port: opts.port, host: opts.host })
  // Handed to the next primary on upgrade; the old one stops accepting once the new one is ready.
  // Once handed over: stop accepting (net.Server's close: http.Server's would also close idle
  // kept-alive connections, racing a scraper's next request into a reset) and answer the next
  // request on each open connection with `connection: close`, so the scraper reconnects to the new primary.
  const unshare = h.shareListener?.(METRICS_LISTENER_NAME, server, () => {
    handedOver = true
    NetServer.prototype.close.call(server)
  })
  const port = (server.address() as AddressInfo).port
  const shownHost = opts.host.includes(':') ? `[${opts.host}]` : opts.host
  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      supervisor.detach()
      unshare?.()
      server.close(() => resolve())
      server.closeAllConnections()
    })
    return closing
  }
  h.onClose(close)
  return { enabled: true, port, url: `http://${shownHost}:${port}${opts.path}`, scrape, close }
}

function mergeExtra (families: Family[], extra: Family[]): Family[] {
  const byName = new Map(families.map((f) => [f.name, f]))
  const out = [...families]
  for (const e of extra) {
    const f = byName.get(e.name)
    const values = e.values.map((v) => ({ ...v, value: typeof v.value === 'number' ? v.value : NaN }))
    if (f === undefined) {
      const copy = { ...e, values }
      byName.set(e.name, copy)
      out.push(copy)
    } else if (f.type === e.type) {
      f.values.push(...values)
    }
  }
  return out
}
