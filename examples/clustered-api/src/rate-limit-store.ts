import type { FastifyBaseLogger } from 'fastify'
import type { FastifyRedis } from '@fastify/redis'

/**
 * A fixed-window counter in Redis for `@fastify/rate-limit`, shared by every worker.
 *
 * The whole step runs as one Lua script: INCR the window's counter, start the window's expiry on the
 * first hit, read the time left. Redis runs scripts one at a time, so two workers counting at the same
 * instant can never both see "N-1": exactly `max` requests pass per window across the cluster. Keys
 * get the client's `keyPrefix` (REDIS_PREFIX) like every other key of the app.
 *
 * Errors go back to the plugin, which is registered with `skipOnError: true`: while Redis is down the
 * limit is not enforced (fail open, logged) rather than turning every request into an error. Routes that
 * really need Redis (auth, cart) fail on their own with a 503.
 */
const script = `
local current = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { current, ttl }
`

interface ScriptedRedis {
  nclustRateLimit?: (key: string, windowMs: number) => Promise<[number, number]>
}

type IncrCallback = (err: Error | null, res?: { current: number, ttl: number }) => void

interface RouteOptions { routeInfo: { method?: string, url?: string } }

export interface RateLimitStoreClass {
  new (): RateLimitStore
}

export interface RateLimitStore {
  incr (key: string, cb: IncrCallback, timeWindow: number, max: number): void
  child (routeOptions: RouteOptions): RateLimitStore
}

export function redisRateLimitStore (redis: FastifyRedis, log: FastifyBaseLogger, namespace = 'rl:'): RateLimitStoreClass {
  const scripted = redis as unknown as ScriptedRedis
  if (scripted.nclustRateLimit === undefined) {
    redis.defineCommand('nclustRateLimit', { numberOfKeys: 1, lua: script })
  }
  let lastWarn = 0

  class Store implements RateLimitStore {
    private prefix = namespace

    // The plugin constructs the store with its own options (`new Store(globalParams)`): ignored here.
    static withPrefix (prefix: string): Store {
      const store = new Store()
      store.prefix = prefix
      return store
    }

    incr (key: string, cb: IncrCallback, timeWindow: number): void {
      const run = scripted.nclustRateLimit
      if (run === undefined) {
        cb(new Error('rate-limit script not defined'))
        return
      }
      run.call(redis, this.prefix + key, timeWindow).then(
        ([current, ttl]) => cb(null, { current, ttl }),
        (err: Error) => {
          const now = Date.now()
          if (now - lastWarn > 10000) {
            lastWarn = now
            log.warn({ err: err.message }, 'rate limit not enforced: redis unavailable (fail open)')
          }
          cb(err)
        })
    }

    child (routeOptions: RouteOptions): RateLimitStore {
      return Store.withPrefix(`${this.prefix}${routeOptions.routeInfo.method ?? ''}${routeOptions.routeInfo.url ?? ''}:`)
    }
  }
  return Store as unknown as RateLimitStoreClass
}
