import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Redis } from 'ioredis'

/**
 * A cluster-wide limit on failed logins, per username and per client address, counted in Redis so
 * every worker counts the same attempts (a per-worker Map would give an attacker N times the budget,
 * and forget everything when a worker is replaced).
 *
 * Every attempt is counted BEFORE the password is checked, in one Lua script (Redis runs scripts one
 * at a time): concurrent guesses spread over all workers can never verify more than the limit, and a
 * blocked attempt costs no scrypt. A successful login then forgets the username's failures and takes
 * back its own count from the address, so only failures remain counted there. The address count is
 * not wiped by a success: otherwise one valid account would let an attacker reset the address limit
 * between guesses at other usernames. Unknown usernames count like known ones, so a 429 says nothing
 * about which usernames exist.
 *
 * Like the global rate limiter, it fails open while Redis is unreachable: login needs only Postgres,
 * and an outage of Redis must not lock every user out (see the README's Rate limiting section).
 * @fastify/rate-limit is not used here: it counts requests, not failures, and cannot be reset by a success.
 */

const attemptScript = `
local u = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local a = redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return { u, redis.call('PTTL', KEYS[1]), a, redis.call('PTTL', KEYS[2]) }`

const successScript = `
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 1`

export interface LoginLimitOptions {
  /** Failed logins allowed per username per window, across the cluster. */
  perUser: number
  /** Failed logins allowed per client address per window, across the cluster. */
  perAddress: number
  /** Window in ms, from the first failure. */
  windowMs: number
}

export type Verdict = { blocked: false } | { blocked: true, retryAfterSeconds: number, reason: 'username' | 'address' }

export interface LoginLimit {
  /** Count this attempt; blocked when the username or the address is over its limit. */
  attempt: (username: string, address: string) => Promise<Verdict>
  /** The password was right: forget the username's failures, and this attempt's count on the address. */
  succeeded: (username: string, address: string) => Promise<void>
  /** Answer a blocked attempt: 429 with Retry-After. */
  refuse: (request: FastifyRequest, reply: FastifyReply, verdict: Verdict & { blocked: true }) => FastifyReply
}

const keys = (username: string, address: string): [string, string] =>
  [`login-fail:user:${username.toLowerCase()}`, `login-fail:addr:${address}`]

export function loginLimit (app: FastifyInstance, opts: LoginLimitOptions): LoginLimit {
  const redis: Redis = app.redis
  return {
    async attempt (username, address) {
      let counts: number[]
      try {
        counts = await redis.eval(attemptScript, 2, ...keys(username, address), String(opts.windowMs)) as number[]
      } catch (err) {
        app.log.warn({ err: (err as Error).message }, 'login limit: redis unavailable, not counting this attempt (fails open)')
        return { blocked: false }
      }
      const [user = 0, userTtl = 0, addr = 0, addrTtl = 0] = counts
      const over: Array<['username' | 'address', number]> = []
      if (user > opts.perUser) over.push(['username', userTtl])
      if (addr > opts.perAddress) over.push(['address', addrTtl])
      if (over.length === 0) return { blocked: false }
      const [reason, ttl] = over.reduce((a, b) => (b[1] > a[1] ? b : a))
      return { blocked: true, reason, retryAfterSeconds: Math.max(1, Math.ceil(ttl / 1000)) }
    },
    async succeeded (username, address) {
      try {
        await redis.eval(successScript, 2, ...keys(username, address))
      } catch (err) {
        app.log.warn({ err: (err as Error).message }, 'login limit: redis unavailable, failures not reset')
      }
    },
    refuse (request, reply, verdict) {
      request.log.warn({ reason: verdict.reason, retryAfter: verdict.retryAfterSeconds }, 'login refused: too many failed logins')
      return reply.code(429).header('retry-after', String(verdict.retryAfterSeconds)).send({
        statusCode: 429,
        error: 'Too Many Requests',
        code: 'TOO_MANY_FAILED_LOGINS',
        message: `too many failed logins for this ${verdict.reason}, retry in ${verdict.retryAfterSeconds} s`,
        requestId: request.id
      })
    }
  }
}
