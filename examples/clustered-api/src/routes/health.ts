import type { FastifyInstance } from 'fastify'
import { withTimeout } from '../errors.js'

type Dependency = 'postgres' | 'redis'
type Checks = Record<Dependency, { ok: boolean }>

const check = { type: 'object', additionalProperties: false, required: ['ok'], properties: { ok: { type: 'boolean' } } } as const

/** A fixed shape: a status and two booleans. No error text, hosts, timings or pids (those are in the log and headers). */
const health = {
  type: 'object',
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['ok', 'degraded', 'draining'] },
    checks: { type: 'object', additionalProperties: false, properties: { postgres: check, redis: check } }
  }
} as const

/** The part of the drain decorator this route reads (registered by startClustered). */
interface DrainState { draining: boolean }

/**
 * Per-worker readiness: this process' own Postgres pool and Redis connection, each with a short
 * timeout. 503 when one is down or when the worker is draining, so a load balancer stops sending it
 * traffic; the worker itself keeps running and turns 200 again on its own when the dependency returns.
 * Not rate limited, and public, so:
 * - at most one round of checks is in flight per worker, and its result is reused for
 *   HEALTH_CACHE_TTL ms: a flood of /health costs the dependencies one `SELECT 1` and one `PING` per
 *   worker per period, not one per request;
 * - why a check failed (host, port, user, timeout) goes to the log, never into the response.
 * The draining state is read on every request (it must not lag behind a cached "ok").
 */
export function healthRoutes (app: FastifyInstance): void {
  const timeout = app.config.healthTimeout
  const ttl = app.config.healthCacheTtl
  let last: { checks: Checks, at: number } | undefined
  let inFlight: Promise<Checks> | undefined

  async function run (dependency: Dependency, fn: () => Promise<unknown>): Promise<{ ok: boolean }> {
    try {
      await withTimeout(timeout, `${dependency} health check`, fn())
      return { ok: true }
    } catch (err) {
      app.log.warn({ dependency, err: err instanceof Error ? err.message : String(err) }, 'health check failed')
      return { ok: false }
    }
  }

  async function checks (): Promise<Checks> {
    if (last !== undefined && performance.now() - last.at < ttl) return last.checks
    inFlight ??= (async () => {
      const [postgres, redis] = await Promise.all([
        run('postgres', () => app.pg.query('SELECT 1')),
        run('redis', () => app.redis.ping())
      ])
      last = { checks: { postgres, redis }, at: performance.now() }
      return last.checks
    })().finally(() => { inFlight = undefined })
    return await inFlight
  }
  // Liveness: answered by the event loop alone, touching no dependency, so only a hung or blocked
  // process fails it (a Redis or Postgres outage must not get every pod restarted: /health reports
  // those). Not rate limited; request lines only at warn, as probes hit it every few seconds.
  app.get('/live', {
    config: { rateLimit: false },
    logLevel: 'warn',
    schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' }, pid: { type: 'integer' } } } } }
  }, async () => ({ status: 'alive', pid: process.pid }))

  app.get('/health', {
    config: { rateLimit: false },
    schema: { response: { 200: health, 503: health } }
  }, async (_request, reply) => {
    const result = await checks()
    const drain = app.hasDecorator('drain') ? (app as unknown as { drain?: DrainState }).drain : undefined
    const status = drain?.draining === true ? 'draining' : result.postgres.ok && result.redis.ok ? 'ok' : 'degraded'
    return reply.code(status === 'ok' ? 200 : 503).send({ status, checks: result })
  })
}
