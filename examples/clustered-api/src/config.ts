import { defaultWorkerCount } from '@nclust/fastify-cluster'
import { isIP } from 'node:net'
import { envSchema } from 'env-schema'

/**
 * Every setting comes from an environment variable, validated once at start. A bad value stops the
 * process with one message that names each bad variable, instead of failing later in a request.
 */
export interface Config {
  port: number
  host: string
  /** Worker processes; 1 runs the app in-process without forking. */
  workers: number
  shutdownTimeout: number
  /** ms a draining worker keeps serving (health already 503) before it stops accepting connections. */
  drainDelay: number
  logLevel: string
  databaseUrl: string
  /** Postgres schema holding the tables (the tests use a throwaway one per run). */
  pgSchema: string
  /** Total Postgres connections all workers of this machine may open together. */
  pgPoolTotal: number
  /** ms to wait for a new Postgres connection before the request fails with 503. */
  pgConnectTimeout: number
  redisUrl: string
  /** Prefix of every Redis key this app writes (the tests use a throwaway one per run). */
  redisPrefix: string
  /** Always given by the environment: only the dev launcher (tools/dev-services) generates one, for its own child. */
  jwtSecret: string
  /** Token lifetime in seconds. */
  jwtExpiresIn: number
  /** Fastify's trustProxy: false (default), a hop count, or the proxies' addresses/CIDRs. Never `true`. */
  trustProxy: false | number | string[]
  /** Requests allowed per client IP per window, across all workers. */
  rateLimitMax: number
  /** Rate-limit window in milliseconds. */
  rateLimitWindow: number
  /** Registrations (POST /users, each a 128 MiB scrypt) allowed per client IP per rateLimitWindow, across all workers. */
  registerRateLimitMax: number
  /** ms a client has to send a whole request (headers and body); then 408 and the socket is closed. */
  requestTimeout: number
  /** ms a socket may stay silent (no byte in or out) while a request is open; then it is destroyed. */
  connectionTimeout: number
  /** scrypt hashes one worker runs at once (each 128 MiB and one libuv pool thread). */
  hashConcurrency: number
  /** Hashes that may wait for a slot in one worker; more are answered 503. */
  hashQueue: number
  /** Failed logins allowed per username, per address, and their window (ms), across all workers. */
  loginFailuresPerUser: number
  loginFailuresPerAddress: number
  loginFailureWindow: number
  /** Largest accepted request body in bytes; bigger ones get 413. */
  bodyLimit: number
  /** Timeout of each /health dependency check in milliseconds. */
  healthTimeout: number
  /** How long one round of /health checks is reused, ms (0: every request checks, still one round at a time). */
  healthCacheTtl: number
  /** How long a starting worker waits for Redis before giving up (the supervisor retries it), ms. */
  redisStartTimeout: number
  /** ms a Redis command may take before the request fails with 503 (Redis too slow counts as away). */
  redisCommandTimeout: number
  /** Idle lifetime of a cart in seconds. */
  cartTtl: number
  /** Distinct SKUs one cart may hold. */
  cartMaxItems: number
  /** Port of the primary's cluster-wide /metrics; null when METRICS_PORT=off. */
  metricsPort: number | null
  metricsHost: string
}

const schema = {
  type: 'object',
  // Required whatever NODE_ENV says: a deploy that forgets NODE_ENV=production must not start on a
  // generated secret and the local URLs. The dev launcher (tools/dev-services) is what passes them for development.
  required: ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET'],
  properties: {
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 3000 },
    HOST: { type: 'string', minLength: 1, default: '0.0.0.0' },
    WORKER_COUNT: { type: 'integer', minimum: 1, maximum: 256 },
    SHUTDOWN_TIMEOUT: { type: 'integer', minimum: 1, default: 30000 },
    DRAIN_DELAY: { type: 'integer', minimum: 0, default: 0 },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    DATABASE_URL: { type: 'string', pattern: '^postgres(ql)?://' },
    PG_SCHEMA: { type: 'string', pattern: '^[a-z_][a-z0-9_]{0,62}$', default: 'public' },
    PG_POOL_TOTAL: { type: 'integer', minimum: 1, maximum: 10000, default: 80 },
    PG_CONNECT_TIMEOUT: { type: 'integer', minimum: 100, maximum: 600000, default: 2000 },
    REDIS_URL: { type: 'string', pattern: '^rediss?://' },
    REDIS_PREFIX: { type: 'string', maxLength: 64, default: 'nclust:' },
    REDIS_START_TIMEOUT: { type: 'integer', minimum: 100, maximum: 600000, default: 10000 },
    REDIS_COMMAND_TIMEOUT: { type: 'integer', minimum: 100, maximum: 600000, default: 1000 },
    JWT_SECRET: { type: 'string', minLength: 32 },
    JWT_EXPIRES_IN: { type: 'integer', minimum: 1, maximum: 2592000, default: 3600 },
    TRUST_PROXY: { type: 'string', maxLength: 2000 },
    RATE_LIMIT_MAX: { type: 'integer', minimum: 1, default: 300 },
    RATE_LIMIT_WINDOW: { type: 'integer', minimum: 100, default: 60000 },
    REGISTER_RATE_LIMIT_MAX: { type: 'integer', minimum: 1, default: 5 },
    REQUEST_TIMEOUT: { type: 'integer', minimum: 1000, maximum: 600000 },
    CONNECTION_TIMEOUT: { type: 'integer', minimum: 1000, maximum: 600000, default: 30000 },
    HASH_CONCURRENCY: { type: 'integer', minimum: 1, maximum: 64, default: 2 },
    HASH_QUEUE: { type: 'integer', minimum: 0, maximum: 10000, default: 16 },
    LOGIN_FAILURES_PER_USER: { type: 'integer', minimum: 1, default: 10 },
    LOGIN_FAILURES_PER_ADDRESS: { type: 'integer', minimum: 1, default: 50 },
    LOGIN_FAILURE_WINDOW: { type: 'integer', minimum: 1000, default: 900000 },
    BODY_LIMIT: { type: 'integer', minimum: 1024, maximum: 10485760, default: 16384 },
    HEALTH_TIMEOUT: { type: 'integer', minimum: 50, maximum: 30000, default: 1000 },
    HEALTH_CACHE_TTL: { type: 'integer', minimum: 0, maximum: 60000, default: 1000 },
    CART_TTL: { type: 'integer', minimum: 1, default: 86400 },
    CART_MAX_ITEMS: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
    METRICS_PORT: { type: 'string', pattern: '^(off|[0-9]{1,5})$', default: '9091' },
    METRICS_HOST: { type: 'string', minLength: 1, default: '127.0.0.1' }
  }
} as const

interface RawEnv {
  PORT: number
  HOST: string
  WORKER_COUNT?: number
  SHUTDOWN_TIMEOUT: number
  DRAIN_DELAY: number
  LOG_LEVEL: string
  DATABASE_URL: string
  PG_SCHEMA: string
  PG_POOL_TOTAL: number
  PG_CONNECT_TIMEOUT: number
  REDIS_URL: string
  REDIS_PREFIX: string
  REDIS_START_TIMEOUT: number
  REDIS_COMMAND_TIMEOUT: number
  JWT_SECRET: string
  JWT_EXPIRES_IN: number
  TRUST_PROXY?: string
  RATE_LIMIT_MAX: number
  RATE_LIMIT_WINDOW: number
  REGISTER_RATE_LIMIT_MAX: number
  REQUEST_TIMEOUT?: number
  CONNECTION_TIMEOUT: number
  HASH_CONCURRENCY: number
  HASH_QUEUE: number
  LOGIN_FAILURES_PER_USER: number
  LOGIN_FAILURES_PER_ADDRESS: number
  LOGIN_FAILURE_WINDOW: number
  BODY_LIMIT: number
  HEALTH_TIMEOUT: number
  HEALTH_CACHE_TTL: number
  CART_TTL: number
  CART_MAX_ITEMS: number
  METRICS_PORT: string
  METRICS_HOST: string
}

/** Why each required variable is required, said once where it is missing. */
const requiredHints: Record<string, string> = {
  JWT_SECRET: 'is required (at least 32 characters, the same for every worker; no generated default in any NODE_ENV)',
  DATABASE_URL: 'is required (postgres://user:pass@host:5432/db; no default in any NODE_ENV)',
  REDIS_URL: 'is required (redis://host:6379; no default in any NODE_ENV)'
}

interface AjvError { instancePath: string, message?: string, params?: Record<string, unknown>, keyword: string }

export class ConfigError extends Error {
  /** Names of the variables that failed validation. */
  readonly variables: string[]
  constructor (problems: Array<{ name: string, problem: string }>) {
    super('Invalid environment: ' + problems.map((p) => `${p.name} ${p.problem}`).join('; '))
    this.name = 'ConfigError'
    this.variables = [...new Set(problems.map((p) => p.name))]
  }
}

/**
 * Validate `env` (process.env by default). Empty strings count as unset, as docker-compose writes them.
 * DATABASE_URL, REDIS_URL and JWT_SECRET have no default, in any NODE_ENV.
 */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): Config {
  const data: Record<string, string> = {}
  for (const key of Object.keys(schema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') data[key] = value
  }
  let raw: RawEnv
  try {
    raw = envSchema<RawEnv>({ schema: structuredClone(schema) as object, data, env: false })
  } catch (err) {
    const errors = (err as { errors?: AjvError[] }).errors
    if (!Array.isArray(errors)) throw err
    throw new ConfigError(errors.map((e) => {
      const name = e.instancePath.replace(/^\//, '') || String(e.params?.missingProperty ?? '(env)')
      const got = data[name]
      const secret = name === 'JWT_SECRET' || name === 'DATABASE_URL' || name === 'REDIS_URL'
      if (e.keyword === 'required') return { name, problem: requiredHints[name] ?? 'is required' }
      return { name, problem: `${e.message ?? 'is invalid'}${got !== undefined && !secret ? ` (got "${got}")` : ''}` }
    }))
  }
  if (raw.METRICS_PORT !== 'off' && Number(raw.METRICS_PORT) > 65535) {
    throw new ConfigError([{ name: 'METRICS_PORT', problem: `must be a port from 0 to 65535 or "off" (got "${raw.METRICS_PORT}")` }])
  }
  if (raw.DRAIN_DELAY >= raw.SHUTDOWN_TIMEOUT / 2) {
    throw new ConfigError([{ name: 'DRAIN_DELAY', problem: `must be less than half of SHUTDOWN_TIMEOUT (${raw.SHUTDOWN_TIMEOUT}), to leave time for the in-flight requests (got "${raw.DRAIN_DELAY}")` }])
  }
  // Default 10 s, or half of SHUTDOWN_TIMEOUT when that is shorter: a slow client is cut well before the drain deadline.
  const requestTimeout = raw.REQUEST_TIMEOUT ?? Math.max(1000, Math.min(10000, Math.floor(raw.SHUTDOWN_TIMEOUT / 2)))
  if (raw.REQUEST_TIMEOUT !== undefined && raw.REQUEST_TIMEOUT >= raw.SHUTDOWN_TIMEOUT) {
    throw new ConfigError([{ name: 'REQUEST_TIMEOUT', problem: `must be less than SHUTDOWN_TIMEOUT (${raw.SHUTDOWN_TIMEOUT}), or a client trickling a request outlasts the drain (got "${raw.REQUEST_TIMEOUT}")` }])
  }
  const trustProxy = parseTrustProxy(raw.TRUST_PROXY)
  return {
    port: raw.PORT,
    host: raw.HOST,
    workers: raw.WORKER_COUNT ?? defaultWorkerCount().workers, // honours a container's cgroup CPU quota
    shutdownTimeout: raw.SHUTDOWN_TIMEOUT,
    drainDelay: raw.DRAIN_DELAY,
    logLevel: raw.LOG_LEVEL,
    databaseUrl: raw.DATABASE_URL,
    pgSchema: raw.PG_SCHEMA,
    pgPoolTotal: raw.PG_POOL_TOTAL,
    pgConnectTimeout: raw.PG_CONNECT_TIMEOUT,
    redisUrl: raw.REDIS_URL,
    redisPrefix: raw.REDIS_PREFIX,
    redisStartTimeout: raw.REDIS_START_TIMEOUT,
    redisCommandTimeout: raw.REDIS_COMMAND_TIMEOUT,
    jwtSecret: raw.JWT_SECRET,
    jwtExpiresIn: raw.JWT_EXPIRES_IN,
    trustProxy,
    rateLimitMax: raw.RATE_LIMIT_MAX,
    rateLimitWindow: raw.RATE_LIMIT_WINDOW,
    registerRateLimitMax: raw.REGISTER_RATE_LIMIT_MAX,
    requestTimeout,
    connectionTimeout: raw.CONNECTION_TIMEOUT,
    hashConcurrency: raw.HASH_CONCURRENCY,
    hashQueue: raw.HASH_QUEUE,
    loginFailuresPerUser: raw.LOGIN_FAILURES_PER_USER,
    loginFailuresPerAddress: raw.LOGIN_FAILURES_PER_ADDRESS,
    loginFailureWindow: raw.LOGIN_FAILURE_WINDOW,
    bodyLimit: raw.BODY_LIMIT,
    healthTimeout: raw.HEALTH_TIMEOUT,
    healthCacheTtl: raw.HEALTH_CACHE_TTL,
    cartTtl: raw.CART_TTL,
    cartMaxItems: raw.CART_MAX_ITEMS,
    metricsPort: raw.METRICS_PORT === 'off' ? null : Number(raw.METRICS_PORT),
    metricsHost: raw.METRICS_HOST
  }
}

/**
 * Connections one worker's pool may open: its share of PG_POOL_TOTAL, capped at 5 (the classic
 * min(5, floor(budget / workers)) rule) and at least 1. With the default budget of 80, the whole
 * machine stays well under Postgres' default max_connections of 100, leaving room for the primary's
 * migration connection, psql sessions and other services.
 */
export function poolSizePerWorker (total: number, workers: number): number {
  return Math.max(1, Math.min(5, Math.floor(total / Math.max(1, workers))))
}

/** proxy-addr's names for address ranges, which Fastify's trustProxy accepts too. */
const rangeNames = new Set(['loopback', 'linklocal', 'uniquelocal'])

/**
 * TRUST_PROXY: off (unset, "off", "false", "0"), a hop count ("1": the peer is the proxy, the last
 * X-Forwarded-For entry is the client), or a comma-separated list of proxy addresses, CIDRs or
 * proxy-addr range names. `true` is refused: it would take the leftmost X-Forwarded-For entry, which
 * any client writes, as its address, so anyone could pick their own rate-limit key.
 */
export function parseTrustProxy (value: string | undefined): false | number | string[] {
  const v = value?.trim() ?? ''
  if (v === '' || v === 'off' || v === 'false' || v === '0') return false
  if (v === 'true') {
    throw new ConfigError([{ name: 'TRUST_PROXY', problem: 'must not be "true": that trusts any X-Forwarded-For a client sends; give the number of proxies in front (e.g. "1") or their addresses/CIDRs (e.g. "10.0.0.0/8,127.0.0.1")' }])
  }
  if (/^\d+$/.test(v)) {
    const hops = Number(v)
    if (hops > 16) throw new ConfigError([{ name: 'TRUST_PROXY', problem: `must be a hop count from 1 to 16 or a list of addresses/CIDRs (got "${v}")` }])
    return hops
  }
  const entries = v.split(',').map((e) => e.trim()).filter((e) => e !== '')
  const bad = entries.filter((e) => {
    if (rangeNames.has(e)) return false
    const [addr = '', bits, extra] = e.split('/')
    const family = isIP(addr)
    if (family === 0 || extra !== undefined) return true
    if (bits === undefined) return false
    const max = family === 4 ? 32 : 128
    return !/^\d+$/.test(bits) || Number(bits) > max
  })
  if (bad.length > 0 || entries.length === 0) {
    throw new ConfigError([{ name: 'TRUST_PROXY', problem: `must be off, a hop count, or comma-separated IP addresses/CIDRs (bad: ${bad.map((b) => `"${b}"`).join(', ') || '(empty)'})` }])
  }
  return entries
}
