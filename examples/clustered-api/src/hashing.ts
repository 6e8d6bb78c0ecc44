import type { FastifyInstance } from 'fastify'
import { Counter, Gauge } from 'prom-client'
import type { Config } from './config.js'
import { HashLimiter } from './passwords.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every scrypt hash of this worker (register, login, rehash) runs through it. */
    hashing: HashLimiter
  }
}

/**
 * This worker's password-hash limiter, and its metrics in the worker registry (so in the cluster
 * scrape): hashes running, waiting, and refused with 503. Call after `registerMetrics`.
 */
export function registerHashing (app: FastifyInstance, config: Config): void {
  const registry = app.pidMetrics.registry
  const rejected = new Counter({
    name: 'password_hash_rejected_total',
    help: 'Logins and registrations answered 503 because this worker\'s hash queue was full.',
    registers: [registry]
  })
  const limiter = new HashLimiter(config.hashConcurrency, config.hashQueue, () => rejected.inc())
  new Gauge({ // eslint-disable-line no-new
    name: 'password_hash_active',
    help: 'Password hashes running in this worker (at most HASH_CONCURRENCY).',
    registers: [registry],
    collect () { this.set(limiter.active) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'password_hash_queued',
    help: 'Password hashes waiting for a slot in this worker (at most HASH_QUEUE).',
    registers: [registry],
    collect () { this.set(limiter.queued) }
  })
  app.decorate('hashing', limiter)
  // The registry may outlive this app (prom-client's global one, in tests building several apps).
  app.addHook('onClose', async () => {
    for (const name of ['password_hash_rejected_total', 'password_hash_active', 'password_hash_queued']) registry.removeSingleMetric(name)
  })
}
