import type { FastifyInstance } from 'fastify'
import { withTimeout } from '../errors.js'

interface Check { ok: boolean, ms: number, error?: string }

const check = {
  type: 'object',
  properties: { ok: { type: 'boolean' }, ms: { type: 'integer' }, error: { type: 'string' } }
} as const

const health = {
  type: 'object',
  properties: {
    status: { type: 'string', enum: ['ok', 'degraded', 'draining'] },
    pid: { type: 'integer' },
    workerId: { type: 'integer' },
    checks: { type: 'object', properties: { postgres: check, redis: check } }
  }
} as const

/** The part of the drain decorator this route reads (registered by startClustered). */
interface DrainState { draining: boolean }

/**
 * Per-worker readiness: this process' own Postgres pool and Redis connection, each with a short
 * timeout. 503 when one is down or when the worker is draining, so a load balancer stops sending it
 * traffic; the worker itself keeps running and turns 200 again on its own when the dependency returns.
 * Not rate limited.
 */
export function healthRoutes (app: FastifyInstance): void {
  const timeout = app.config.healthTimeout

  async function run (fn: () => Promise<unknown>, what: string): Promise<Check> {
    const start = performance.now()
    try {
      await withTimeout(timeout, what, fn())
      return { ok: true, ms: Math.round(performance.now() - start) }
    } catch (err) {
      return { ok: false, ms: Math.round(performance.now() - start), error: err instanceof Error ? err.message : String(err) }
    }
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
    const [postgres, redis] = await Promise.all([
      run(() => app.pg.query('SELECT 1'), 'postgres SELECT 1'),
      run(() => app.redis.ping(), 'redis PING')
    ])
    const drain = app.hasDecorator('drain') ? (app as unknown as { drain?: DrainState }).drain : undefined
    const draining = drain?.draining === true
    const status = draining ? 'draining' : postgres.ok && redis.ok ? 'ok' : 'degraded'
    return reply.code(status === 'ok' ? 200 : 503).send({
      status, pid: process.pid, workerId: app.worker.workerId, checks: { postgres, redis }
    })
  })
}
