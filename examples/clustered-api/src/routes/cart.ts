import type { FastifyInstance } from 'fastify'
import type { Result } from 'ioredis'
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

const added = {
  type: 'object',
  properties: {
    sku: { type: 'string' },
    quantity: { type: 'integer' },
    distinctItems: { type: 'integer' },
    pid: { type: 'integer' },
    workerId: { type: 'integer' }
  }
} as const

/** Most of one SKU a cart holds (and most one add asks for): a quantity is a count, not an integer overflow test. */
export const MAX_QUANTITY = 1000

/**
 * Add to the cart only if the SKU is already in it or the cart holds fewer than the cap, and only if
 * the SKU's quantity stays within MAX_QUANTITY; refresh the idle expiry; return the SKU's new quantity
 * and the number of distinct items (-1 as the quantity when the cart is full, -2 when the SKU's
 * quantity would pass the limit). One script, so the checks and the add are atomic across workers
 * (two workers adding the cap's last item at once cannot both pass), and one round trip instead of a
 * MULTI and an HGETALL.
 */
const addScript = `
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = redis.call('HLEN', KEYS[1])
if current == 0 and n >= tonumber(ARGV[3]) then return {-1, n} end
if current + tonumber(ARGV[2]) > ${MAX_QUANTITY} then return {-2, n} end
local exists = current > 0 and 1 or 0
local q = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if exists == 0 then n = n + 1 end
return {q, n}`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** {@link addScript}: [new quantity, or -1 when full, -2 past MAX_QUANTITY; distinct items]. */
    cartAdd: (key: string, sku: string, quantity: number, max: number, ttl: number) => Result<[number, number], Context>
  }
}

/**
 * A cart in Redis, one hash per user. Keeping it in a Map inside the worker would "work" with one
 * process and silently lose items with two: the next request usually lands on the other worker.
 * HINCRBY is atomic, so two workers adding at the same instant never lose an increment. A cart holds
 * at most CART_MAX_ITEMS distinct SKUs, so one user cannot grow a hash (and Redis' memory) without bound.
 */
export function cartRoutes (app: FastifyInstance): void {
  const key = (userId: string): string => `cart:${userId}`
  const ttl = app.config.cartTtl
  const max = app.config.cartMaxItems
  // ioredis sends EVALSHA (EVAL the first time) and prefixes KEYS with REDIS_PREFIX like any command.
  app.redis.defineCommand('cartAdd', { numberOfKeys: 1, lua: addScript })

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
          quantity: { type: 'integer', minimum: 1, maximum: MAX_QUANTITY, default: 1 }
        }
      },
      response: { 200: added }
    }
  }, async (request, reply) => {
    const { sku, quantity } = request.body
    const [total, distinct] = await withRedis(() => app.redis.cartAdd(key(request.user.sub), sku, quantity, max, ttl))
    if (total === -1) {
      return reply.code(409).send({
        statusCode: 409, error: 'Conflict', code: 'CART_FULL', message: `the cart holds at most ${max} distinct items; remove one first`, requestId: request.id
      })
    }
    if (total === -2) {
      return reply.code(409).send({
        statusCode: 409, error: 'Conflict', code: 'CART_QUANTITY_LIMIT', message: `the cart holds at most ${MAX_QUANTITY} of one item`, requestId: request.id
      })
    }
    return { sku, quantity: total, distinctItems: distinct, pid: process.pid, workerId: app.worker.workerId }
  })

  app.get('/cart', { preHandler: app.authenticate, schema: { response: { 200: cart } } }, async (request) => read(request.user.sub))

  app.delete('/cart', { preHandler: app.authenticate }, async (request, reply) => {
    await withRedis(() => app.redis.del(key(request.user.sub)))
    return reply.code(204).send()
  })
}
