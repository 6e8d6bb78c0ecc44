import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import pg from 'pg'
import { tables } from '../db.js'
import { withPg, withRedis } from '../errors.js'
import { loginLimit } from '../login-limit.js'
import { HashingBusyError, dummyHash, hashPassword, needsRehash, verifyPassword } from '../passwords.js'

/** What the token carries: enough to serve a request on any worker without a lookup. */
export interface TokenClaims {
  sub: string
  username: string
  jti: string
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: TokenClaims
    user: TokenClaims & { iat: number, exp: number }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler: 401 without a valid, unrevoked token; 503 when revocations cannot be checked. */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

const credentials = {
  type: 'object',
  required: ['username', 'password'],
  additionalProperties: false,
  properties: {
    username: { type: 'string', minLength: 3, maxLength: 32, pattern: '^[A-Za-z0-9_.-]+$' },
    password: { type: 'string', minLength: 8, maxLength: 256 }
  }
} as const

const errorResponse = {
  type: 'object',
  properties: {
    statusCode: { type: 'integer' },
    error: { type: 'string' },
    code: { type: 'string' },
    message: { type: 'string' },
    requestId: { type: 'string' }
  }
} as const

const revokedKey = (jti: string): string => `revoked:${jti}`

/** Users, login/logout and the `authenticate` decorator, added to the root instance so every route can use it. */
export function authRoutes (app: FastifyInstance): void {
  const t = tables(app.config.pgSchema)
  const failedLogins = loginLimit(app, { perUser: app.config.loginFailuresPerUser, perAddress: app.config.loginFailuresPerAddress, windowMs: app.config.loginFailureWindow })

  app.decorate('authenticate', async (request: FastifyRequest) => {
    await request.jwtVerify() // 401 for a missing, forged, malformed or expired token
    const { jti } = request.user
    if (typeof jti !== 'string') throw Object.assign(new Error('token has no id'), { statusCode: 401 })
    // The revocation list lives in Redis, so a logout on one worker is seen by all of them. If Redis
    // cannot be asked, the request fails with 503 rather than trusting a possibly revoked token.
    const revoked = await withRedis(() => app.redis.exists(revokedKey(jti)))
    if (revoked === 1) throw Object.assign(new Error('token has been revoked'), { statusCode: 401, code: 'TOKEN_REVOKED' })
  })

  const taken = (request: FastifyRequest, reply: FastifyReply, username: string): FastifyReply =>
    reply.code(409).send({ statusCode: 409, error: 'Conflict', code: 'USERNAME_TAKEN', message: `username "${username}" is already taken`, requestId: request.id })

  app.post<{ Body: { username: string, password: string } }>('/users', {
    // Each registration costs a 128 MiB scrypt: its own limit per address (REGISTER_RATE_LIMIT_MAX per
    // RATE_LIMIT_WINDOW, default 5 per minute), far below the global 300, so a few addresses cannot
    // fill the hash queue and push real logins into 503. Counted in Redis like the global one, under
    // its own key (rl:POST/users-<ip>); a 429 costs no hash.
    config: { rateLimit: { max: app.config.registerRateLimitMax, timeWindow: app.config.rateLimitWindow } },
    schema: {
      body: credentials,
      response: {
        201: { type: 'object', properties: { id: { type: 'integer' }, username: { type: 'string' } } },
        409: errorResponse,
        429: errorResponse
      }
    }
  }, async (request, reply) => {
    const { username, password } = request.body
    // A taken name is answered before the hash (an indexed lookup, migration 3's lower(username)
    // index); the INSERT's unique index still decides a race between two registrations of one name.
    const { rowCount } = await withPg(() => app.pg.query(`SELECT 1 FROM ${t.users} WHERE lower(username) = lower($1)`, [username]))
    if (rowCount !== null && rowCount > 0) return taken(request, reply, username)
    const hash = await app.hashing.run(() => hashPassword(password))
    try {
      const { rows } = await withPg(() => app.pg.query<{ id: string }>(
        `INSERT INTO ${t.users} (username, password_hash) VALUES ($1, $2) RETURNING id`, [username, hash]))
      return reply.code(201).send({ id: Number(rows[0]?.id), username })
    } catch (err) {
      if (err instanceof pg.DatabaseError && err.code === '23505') return taken(request, reply, username)
      throw err
    }
  })

  app.post<{ Body: { username: string, password: string } }>('/login', {
    schema: {
      body: credentials,
      response: {
        200: {
          type: 'object',
          properties: { token: { type: 'string' }, tokenType: { type: 'string' }, expiresIn: { type: 'integer' } }
        },
        401: errorResponse,
        429: errorResponse
      }
    }
  }, async (request, reply) => {
    const { username, password } = request.body
    const verdict = await failedLogins.attempt(username, request.ip)
    if (verdict.blocked) return failedLogins.refuse(request, reply, verdict)
    // Case-insensitive (migration 3's unique index on lower(username) serves this lookup).
    const { rows } = await withPg(() => app.pg.query<{ id: string, username: string, password_hash: string }>(
      `SELECT id, username, password_hash FROM ${t.users} WHERE lower(username) = lower($1)`, [username]))
    const user = rows[0]
    const ok = await app.hashing.run(() => verifyPassword(password, user?.password_hash ?? dummyHash))
    if (user === undefined || !ok) {
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', code: 'BAD_CREDENTIALS', message: 'wrong username or password', requestId: request.id })
    }
    await failedLogins.succeeded(username, request.ip)
    if (needsRehash(user.password_hash)) await rehash(request, user.id, user.password_hash, password)
    // jti lets one token be revoked without a server-side session: only revoked ids are stored.
    const token = app.jwt.sign({ sub: String(user.id), username: user.username, jti: randomUUID() })
    return { token, tokenType: 'Bearer', expiresIn: app.config.jwtExpiresIn }
  })

  /**
   * The stored hash predates today's parameters: the password is known right now, so store a hash at
   * the current cost. Best effort: the login succeeds whether or not this does (queue full, Postgres
   * away), and the next login tries again. Only replaces the exact hash it verified.
   */
  async function rehash (request: FastifyRequest, userId: string, old: string, password: string): Promise<void> {
    try {
      const fresh = await app.hashing.run(() => hashPassword(password))
      await app.pg.query(`UPDATE ${t.users} SET password_hash = $1 WHERE id = $2 AND password_hash = $3`, [fresh, userId, old])
      request.log.info({ userId }, 'password rehashed with the current scrypt parameters')
    } catch (err) {
      request.log.warn({ userId, err: err instanceof HashingBusyError ? err.message : err }, 'password rehash skipped, will retry at the next login')
    }
  }

  app.post('/logout', { preHandler: app.authenticate }, async (request, reply) => {
    const { jti, exp } = request.user
    // Remember the revocation exactly as long as the token could still be used, then let Redis forget it.
    const ttlMs = exp * 1000 - Date.now()
    if (ttlMs > 0) await withRedis(() => app.redis.set(revokedKey(jti), '1', 'PX', ttlMs))
    return reply.code(204).send()
  })

  app.get('/whoami', {
    preHandler: app.authenticate,
    schema: {
      response: {
        200: {
          type: 'object',
          properties: {
            userId: { type: 'integer' },
            username: { type: 'string' },
            tokenExpiresAt: { type: 'string' },
            pid: { type: 'integer' },
            workerId: { type: 'integer' }
          }
        }
      }
    }
  }, async (request) => ({
    userId: Number(request.user.sub),
    username: request.user.username,
    tokenExpiresAt: new Date(request.user.exp * 1000).toISOString(),
    pid: process.pid,
    workerId: app.worker.workerId
  }))
}
