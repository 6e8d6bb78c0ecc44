import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * Password hashing with scrypt at OWASP's current minimum (Password Storage Cheat Sheet: N=2^17,
 * r=8, p=1). `crypto.scrypt` (callback form) runs on the libuv thread pool, so a hash never blocks
 * the worker's event loop; `scryptSync` would stall every other request of this worker for its
 * duration. It costs 128 * N * r = 128 MiB of memory and a few hundred ms of one pool thread, which is
 * why every hash goes through a {@link HashLimiter}.
 */
export const params = { N: 2 ** 17, r: 8, p: 1, keylen: 64 } as const

/** Stored hashes with parameters outside these bounds are refused, not computed (a corrupt row must not cost 1 GiB). */
const limits = { maxN: 2 ** 20, maxR: 32, maxP: 16 }

/** Node refuses scrypt above `maxmem` (32 MiB by default, less than N=2^17 needs): allow what the parameters need, and a margin. */
const maxmemFor = (N: number, r: number, p: number): number => 128 * N * r * p + 16 * 1024 * 1024

function scryptAsync (password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (err, key) => (err !== null ? reject(err) : resolve(key)))
  })
}

interface Parsed { N: number, r: number, p: number, salt: Buffer, key: Buffer }

function parse (stored: string): Parsed | undefined {
  const [alg, n, r, p, saltB64, keyB64] = stored.split('$')
  if (alg !== 'scrypt' || saltB64 === undefined || keyB64 === undefined) return undefined
  const N = Number(n)
  const R = Number(r)
  const P = Number(p)
  const powerOfTwo = Number.isInteger(N) && N >= 2 && (N & (N - 1)) === 0
  if (!powerOfTwo || N > limits.maxN || !Number.isInteger(R) || R < 1 || R > limits.maxR || !Number.isInteger(P) || P < 1 || P > limits.maxP) return undefined
  return { N, r: R, p: P, salt: Buffer.from(saltB64, 'base64'), key: Buffer.from(keyB64, 'base64') }
}

/** `scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash so they can be raised later. */
export async function hashPassword (password: string, cost: { N: number, r: number, p: number } = params): Promise<string> {
  const salt = randomBytes(16)
  const key = await scryptAsync(password, salt, params.keylen, { ...cost, maxmem: maxmemFor(cost.N, cost.r, cost.p) })
  return ['scrypt', cost.N, cost.r, cost.p, salt.toString('base64'), key.toString('base64')].join('$')
}

export async function verifyPassword (password: string, stored: string): Promise<boolean> {
  const s = parse(stored)
  if (s === undefined) return false
  const actual = await scryptAsync(password, s.salt, s.key.length, { N: s.N, r: s.r, p: s.p, maxmem: maxmemFor(s.N, s.r, s.p) })
  return actual.length === s.key.length && timingSafeEqual(actual, s.key)
}

/** True when `stored` was made with weaker parameters than today's: rehash it at the next successful login. */
export function needsRehash (stored: string): boolean {
  const s = parse(stored)
  return s === undefined || s.N < params.N || s.r < params.r || s.p < params.p || s.key.length < params.keylen
}

/** Verified against when the username does not exist, so "no such user" costs as long as "wrong password". */
export const dummyHash = `scrypt$${params.N}$${params.r}$${params.p}$AAAAAAAAAAAAAAAAAAAAAA==$` + Buffer.alloc(params.keylen).toString('base64')

/** The hash queue of this worker is full: answered 503 with Retry-After, the client tries again. */
export class HashingBusyError extends Error {
  readonly statusCode = 503
  readonly code = 'HASHING_BUSY'
  readonly retryAfter = 1
  constructor () {
    super('too many logins in progress, retry later')
    this.name = 'HashingBusyError'
  }
}

/**
 * At most `concurrency` hashes of this worker run at once, at most `maxQueue` wait; more are refused
 * at once with {@link HashingBusyError}. Without it a flood of logins queues without bound in the
 * libuv pool (4 threads, shared with DNS, fs and other crypto), every login waits behind all the
 * others, and the worker's memory grows by 128 MiB per running hash.
 *
 * Hand-written (40 lines) because the usual limiters (p-limit, p-queue) queue without bound: what is
 * wanted here is the refusal when the queue is full, synchronously, before any work is queued.
 */
export class HashLimiter {
  active = 0
  rejected = 0
  private readonly waiting: Array<() => void> = []

  constructor (readonly concurrency: number, readonly maxQueue: number, private readonly onReject: () => void = () => {}) {}

  get queued (): number {
    return this.waiting.length
  }

  async run<T> (fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) {
      if (this.waiting.length >= this.maxQueue) {
        this.rejected++
        this.onReject()
        throw new HashingBusyError()
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve))
    } else {
      this.active++
    }
    try {
      return await fn()
    } finally {
      const next = this.waiting.shift()
      // Hand the slot straight to the next waiter (active stays the same), or free it.
      if (next !== undefined) next()
      else this.active--
    }
  }
}
