import type { FastifyInstance } from 'fastify'
import { withRedis } from '../errors.js'

const cart = {
  type: 'object',
  properties: {
    items: {
      type: 'array',
      items: { type: 'object', properties: { sku: { type: 'string' }, quantity: { type: 'integer' } } }
    },
    totalQuantity: { type: 'integer' },
    pid: { type: 'integer' },
    workerId: { type: 'integer' }
  }
} as const

/**
 * A cart in Redis, one hash per user. Keeping it in a Map inside the worker would "work" with one
 * process and silently lose items with two: the next request usually lands on the other worker.
 * HINCRBY is atomic, so two workers adding at the same instant never lose an increment.
 */
export function cartRoutes (app: FastifyInstance): void {
  const key = (userId: string): string => `cart:${userId}`
  const ttl = app.config.cartTtl

  async function read (userId: string): Promise<{ items: Array<{ sku: string, quantity: number }>, totalQuantity: number, pid: number, workerId: number }> {
    const hash = await withRedis(() => app.redis.hgetall(key(userId)))
    const items = Object.entries(hash)
      .map(([sku, q]) => ({ sku, quantity: Number(q) }))
      .sort((a, b) => a.sku.localeCompare(b.sku))
    return { items, totalQuantity: items.reduce((n, i) => n + i.quantity, 0), pid: process.pid, workerId: app.worker.workerId }
  }

  app.post<{ Body: { sku: string, quantity: number } }>('/cart/items', {
    preHandler: app.authenticate,
    schema: {
      body: {
        type: 'object',
        required: ['sku'],
        additionalProperties: false,
        properties: {
          sku: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' },
          quantity: { type: 'integer', minimum: 1, maximum: 1000, default: 1 }
        }
      },
      response: { 200: cart }
    }
  }, async (request) => {
    const k = key(request.user.sub)
    // One round trip, applied atomically: add, then push the idle expiry forward.
    await withRedis(() => app.redis.multi().hincrby(k, request.body.sku, request.body.quantity).expire(k, ttl).exec())
    return read(request.user.sub)
  })

  app.get('/cart', { preHandler: app.authenticate, schema: { response: { 200: cart } } }, async (request) => read(request.user.sub))

  app.delete('/cart', { preHandler: app.authenticate }, async (request, reply) => {
    await withRedis(() => app.redis.del(key(request.user.sub)))
    return reply.code(204).send()
  })
}
