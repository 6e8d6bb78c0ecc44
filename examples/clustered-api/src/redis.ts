import type { FastifyBaseLogger } from 'fastify'
import { Redis } from 'ioredis'

/** `redis://user:pass@host:port/db` → `redis://host:port/db`, for logs and errors. */
export function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    u.username = ''
    u.password = ''
    return u.toString()
  } catch {
    return '(unparsable url)'
  }
}

/**
 * The worker's Redis client. Created here rather than by @fastify/redis so its 'error' listener is in
 * place from the first connection attempt (an unhandled 'error' would only be printed by ioredis, but
 * we want it in our logs, once per outage) and so a start without Redis fails with a clear message.
 */
export function createRedis (url: string, keyPrefix: string, log: FastifyBaseLogger, commandTimeout = 1000): Redis {
  const client = new Redis(url, {
    keyPrefix,
    // Fail fast while Redis is away instead of queueing commands (and requests) until it returns...
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout,
    // ...and keep reconnecting in the background, so service comes back by itself.
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
    lazyConnect: true
  })
  let down = false
  client.on('error', (err: Error) => {
    if (!down) log.warn({ err: err.message, redis: redactUrl(url) }, 'redis unreachable, reconnecting in the background')
    down = true
  })
  client.on('ready', () => {
    if (down) log.info({ redis: redactUrl(url) }, 'redis connection restored')
    down = false
  })
  return client
}

/**
 * Connect, waiting up to `timeoutMs` for Redis to be ready. A worker does not start without Redis:
 * it rejects with a clear message, the worker exits and the supervisor starts it again with backoff,
 * until Redis is back. (Once started, a worker survives any Redis outage.)
 */
export async function connectRedis (client: Redis, url: string, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup()
      client.disconnect()
      reject(new Error(`Redis is not reachable at ${redactUrl(url)} after ${timeoutMs} ms: a worker needs it to start (REDIS_URL)`))
    }, timeoutMs)
    const onReady = (): void => { cleanup(); resolve() }
    const cleanup = (): void => { clearTimeout(timer); client.off('ready', onReady) }
    client.on('ready', onReady)
    if (client.status === 'wait') client.connect().catch(() => {}) // failures are retried by retryStrategy
  })
}

/**
 * QUIT politely when connected (pending replies arrive first); otherwise stop reconnecting: ioredis
 * clears its reconnect timer on disconnect(), so nothing is left to hold the process open.
 */
export async function closeRedis (client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit()
      return
    } catch {}
  }
  client.disconnect()
}

/**
 * Revocations (`revoked:<jti>`) and rate-limit counters live in this Redis. Under any eviction policy
 * but `noeviction`, a full Redis may drop them: a logged-out token would work again, a limited client
 * would start over. Read the policy from INFO (CONFIG GET is often disabled on managed Redis) and warn;
 * the start goes on (a cache-only Redis is a deployment choice, not a crash). Returns the policy, or
 * undefined when it cannot be read.
 */
export async function checkEvictionPolicy (client: Redis, url: string, log: FastifyBaseLogger): Promise<string | undefined> {
  let policy: string | undefined
  try {
    policy = /^maxmemory_policy:(\S+)/m.exec(await client.info('memory'))?.[1]
  } catch (err) {
    log.warn({ err: err instanceof Error ? err.message : String(err), redis: redactUrl(url) }, 'could not read redis maxmemory-policy (INFO memory)')
    return undefined
  }
  if (policy !== undefined && policy !== 'noeviction') {
    log.warn({ policy, redis: redactUrl(url) },
      `redis maxmemory-policy is ${policy}: when Redis is full it may evict token revocations (a logged-out token works again) and rate-limit counters. ` +
      'Set maxmemory-policy noeviction, or keep revocations in a Redis of their own')
  }
  return policy
}
