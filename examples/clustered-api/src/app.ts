import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyPostgres from '@fastify/postgres'
import fastifyRedis from '@fastify/redis'
import fastifyRateLimit from '@fastify/rate-limit'
import type { WorkerContext } from '@nclust/fastify-cluster'
import { pino } from 'pino'
import { loadConfig, poolSizePerWorker, type Config } from './config.js'
import { isPgUnavailable, poolOptions } from './db.js'
import { registerMetrics } from './metrics.js'
import { registerHashing } from './hashing.js'
import { HashingBusyError } from './passwords.js'
import { DependencyUnavailableError } from './errors.js'
import { checkEvictionPolicy, closeRedis, connectRedis, createRedis } from './redis.js'
import { authRoutes } from './routes/auth.js'
import { notesRoutes } from './routes/notes.js'
import { cartRoutes } from './routes/cart.js'
import { healthRoutes } from './routes/health.js'

/** What the app needs from the cluster; `logger` is optional so tests can build the app in-process. */
export interface AppContext {
  workerId: number
  workers: number
  /** True in single-process mode (WORKER_COUNT=1): the process serves its own metrics port. */
  single?: boolean
  logger?: WorkerContext['logger']
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    worker: { workerId: number, workers: number, pid: number }
  }
}

/** Trust the first `hops` addresses from the socket inwards: what Fastify's `trustProxy: <number>` does. */
const trustHops = (hops: number) => (_address: string, hop: number): boolean => hop < hops

/**
 * The worker half of the service, given to `startClustered`. Nothing here is kept in process memory
 * between requests: the next request of the same user may land on another worker, so identity travels
 * in the JWT, and everything else shared (revocations, carts, rate-limit counters, notes) lives in
 * Redis or Postgres. Does not call listen(): the cluster worker does.
 */
export async function buildApp (ctx: AppContext, config: Config = loadConfig()): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = ctx.logger ?? pino({ level: config.logLevel })
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.bodyLimit,
    // request.ip (the rate-limit key) from X-Forwarded-For only when TRUST_PROXY names the proxies in
    // front (hop count or addresses); off by default, never a blanket `true` (config.ts says why).
    // (A hop count is passed as the function Fastify builds from a number at runtime; its types take no number.)
    trustProxy: typeof config.trustProxy === 'number' ? trustHops(config.trustProxy) : config.trustProxy,
    // Slow clients: Fastify disables Node's request timeout (0), so a client trickling a body or its
    // headers a byte at a time held its socket, and a draining worker, until the drain deadline killed
    // it. The whole request must now arrive within REQUEST_TIMEOUT (then 408 and close); a socket silent
    // for CONNECTION_TIMEOUT while a request is open is destroyed (a client that stopped reading).
    // Idle keep-alive sockets keep Fastify's keepAliveTimeout (72 s), and the drain closes those.
    requestTimeout: config.requestTimeout,
    connectionTimeout: config.connectionTimeout,
    http: {
      requestTimeout: config.requestTimeout,
      headersTimeout: config.requestTimeout,
      // Node checks those two timeouts every 30 s by default, so a 10 s timeout could take 40 s. Once
      // a second costs a walk over this worker's open connections: nothing per request.
      connectionsCheckingInterval: Math.min(1000, config.requestTimeout)
    },
    // Per-process counters ("req-1") collide across workers; a UUID does not. The request id is always
    // ours: a client choosing it could make its requests look like someone else's in the logs. A
    // caller's x-request-id is kept for correlation as a separate field, clientRequestId, when it is
    // short and plain.
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    childLoggerFactory: (parent, bindings, opts, rawReq) => {
      const given = rawReq.headers['x-request-id']
      return parent.child(typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? { ...bindings, clientRequestId: given } : bindings, opts)
    }
    // No return503OnClosing: the cluster worker drains (serving late requests with Connection: close)
    // before it calls app.close(), so Fastify's 503-on-closing never meets a request.
  })
  try {
    await setUp(app, ctx, config)
  } catch (err) {
    // Close what was opened before the failure (the pg pool, the Redis client): their sockets would
    // otherwise hold the process open, a test run or a single-mode pod hanging instead of exiting.
    await app.close().catch((closeErr: unknown) => { app.log.warn({ err: closeErr }, 'closing after a failed build') })
    throw err
  }
  return app
}

async function setUp (app: FastifyInstance, ctx: AppContext, config: Config): Promise<void> {
  app.decorate('config', config)
  app.decorate('worker', { workerId: ctx.workerId, workers: ctx.workers, pid: process.pid })

  // Every response says which process served it, so users can watch the balancing.
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-worker-id', String(ctx.workerId))
    reply.header('x-pid', String(process.pid))
    reply.header('x-request-id', request.id)
  })

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const requestId = request.id
    if (err.validation !== undefined) {
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', code: 'FST_ERR_VALIDATION', message: err.message, requestId })
    }
    const dependencyError = err instanceof DependencyUnavailableError
      ? err
      : isPgUnavailable(err) ? new DependencyUnavailableError('postgres', err) : undefined
    if (dependencyError !== undefined) {
      const cause = dependencyError.cause instanceof Error ? dependencyError.cause.message : String(dependencyError.cause)
      request.log.warn({ dependency: dependencyError.dependency, cause }, 'dependency unavailable')
      reply.header('retry-after', '1')
      return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', code: dependencyError.code, message: dependencyError.message, requestId })
    }
    if (err instanceof HashingBusyError) {
      reply.header('retry-after', String(err.retryAfter))
      return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', code: err.code, message: err.message, requestId })
    }
    const status = err.statusCode ?? 500
    if (status >= 400 && status < 500) {
      // Every error answer has a `code`: the error's own, or one named after the status (UNAUTHORIZED...).
      const code = typeof err.code === 'string' && err.code !== '' ? err.code : codeForStatus(status)
      return reply.code(status).send({ statusCode: status, error: STATUS_CODES[status] ?? 'Error', code, message: err.message, requestId })
    }
    request.log.error({ err }, 'request failed')
    return reply.code(500).send({ statusCode: 500, error: 'Internal Server Error', code: 'INTERNAL_ERROR', message: 'Internal Server Error', requestId })
  })

  app.setNotFoundHandler((request, reply) => reply.code(404).send({
    statusCode: 404, error: 'Not Found', code: 'ROUTE_NOT_FOUND', message: `Route ${request.method} ${request.url} not found`, requestId: request.id
  }))

  const poolMax = poolSizePerWorker(config.pgPoolTotal, ctx.workers)
  app.log.info({ poolMax, workers: ctx.workers, pgPoolTotal: config.pgPoolTotal }, `postgres pool: ${poolMax} connections in this worker (${ctx.workers} worker(s), budget ${config.pgPoolTotal})`)
  await app.register(fastifyPostgres, poolOptions(config.databaseUrl, poolMax, config.pgConnectTimeout))
  // An idle pooled connection that dies (Postgres restarted, network cut) is reported here; without a
  // listener the 'error' event would crash the worker. The pool drops it and opens a new one on demand.
  app.pg.pool.on('error', (err) => app.log.warn({ err: err.message }, 'postgres pool: idle connection lost'))

  const redis = createRedis(config.redisUrl, config.redisPrefix, app.log, config.redisCommandTimeout)
  // @fastify/redis decorates app.redis with our client. We close it ourselves: its QUIT would be
  // refused while Redis is away (no offline queue) and the client would keep reconnecting forever,
  // holding the worker open after a shutdown. The hook comes first, so a failed build closes it too.
  app.addHook('onClose', async () => { await closeRedis(redis) })
  await connectRedis(redis, config.redisUrl, config.redisStartTimeout)
  await app.register(fastifyRedis, { client: redis, closeClient: false })
  // Revocations and rate-limit counters must not be evicted: warn at start unless noeviction. One
  // worker checks (worker 0, the only one in single mode), so a cluster logs it once, not N times.
  if (ctx.workerId === 0) await checkEvictionPolicy(redis, config.redisUrl, app.log)

  await app.register(fastifyJwt, {
    secret: config.jwtSecret,
    sign: { algorithm: 'HS256', expiresIn: config.jwtExpiresIn },
    verify: { algorithms: ['HS256'] }
  })

  // This worker's metrics (series labelled with its pid and worker id): collected by the primary over
  // IPC for the cluster scrape, or served on METRICS_PORT in single-process mode; never on the app port.
  await registerMetrics(app, ctx.single === true, config)
  registerHashing(app, config)

  // The plugin's own Redis store: one Lua script does INCR + PEXPIRE atomically, so exactly `max`
  // requests pass per window across every worker (Redis runs scripts one at a time). Keys get the
  // client's keyPrefix (REDIS_PREFIX) + "rl:". While Redis is down, skipOnError fails open: the limit
  // is not enforced rather than every request failing; routes that need Redis answer 503 themselves.
  await app.register(fastifyRateLimit, {
    max: config.rateLimitMax,
    timeWindow: config.rateLimitWindow,
    redis: app.redis,
    nameSpace: 'rl:',
    skipOnError: true,
    onExceeded: (req) => { req.log.info({ ip: req.ip }, 'rate limit exceeded') }
  })

  app.get('/', {
    schema: {
      response: {
        200: {
          type: 'object',
          properties: { service: { type: 'string' }, pid: { type: 'integer' }, workerId: { type: 'integer' }, workers: { type: 'integer' } }
        }
      }
    }
  }, async () => ({ service: 'nclust clustered-api example', pid: process.pid, workerId: ctx.workerId, workers: ctx.workers }))

  healthRoutes(app)
  authRoutes(app)
  notesRoutes(app)
  cartRoutes(app)
}

/** `UNAUTHORIZED` for 401, `PAYLOAD_TOO_LARGE` for 413...: the `code` of an error that brought none. */
export function codeForStatus (status: number): string {
  return (STATUS_CODES[status] ?? 'Error').toUpperCase().replace(/[^A-Z0-9]+/g, '_')
}
