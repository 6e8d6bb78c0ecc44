// The per-worker bound on concurrent password hashes, alone (in-process, real scrypt through the real
// hashPassword): never more than `concurrency` at once, at most `maxQueue` waiting, the rest refused
// synchronously. login-flood.test.ts checks the same through the cluster.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { HashLimiter, HashingBusyError, hashPassword, needsRehash, params, verifyPassword } from '../src/passwords.js'

test('2 at once, 3 waiting, the other 3 of 8 refused at once; waiters run in order', async () => {
  let rejectedHook = 0
  const limiter = new HashLimiter(2, 3, () => { rejectedHook++ })
  let running = 0
  let peak = 0
  const order: number[] = []
  const task = (i: number) => async () => {
    order.push(i)
    running++
    peak = Math.max(peak, running)
    try {
      return await hashPassword(`password ${i}`, { N: 1024, r: 8, p: 1 })
    } finally {
      running--
    }
  }
  const results = await Promise.allSettled(Array.from({ length: 8 }, async (_v, i) => await limiter.run(task(i))))
  const refused = results.map((r, i) => [r, i] as const).filter(([r]) => r.status === 'rejected')
  assert.deepEqual(refused.map(([, i]) => i), [5, 6, 7])
  for (const [r] of refused) assert.ok(r.status === 'rejected' && r.reason instanceof HashingBusyError)
  assert.equal(peak, 2)
  assert.deepEqual(order, [0, 1, 2, 3, 4], 'the queue starts its waiters first in, first out')
  assert.equal(limiter.rejected, 3)
  assert.equal(rejectedHook, 3)
  assert.equal(limiter.active, 0)
  assert.equal(limiter.queued, 0)
})

test('a failing hash frees its slot', async () => {
  const limiter = new HashLimiter(1, 0)
  await assert.rejects(limiter.run(async () => { throw new Error('boom') }), /boom/)
  assert.equal(limiter.active, 0)
  assert.equal(await limiter.run(async () => 42), 42)
})

test('hashes use OWASP\'s scrypt minimum (N=2^17, r=8, p=1); weaker stored hashes verify and ask for a rehash', async () => {
  assert.deepEqual({ N: params.N, r: params.r, p: params.p }, { N: 131072, r: 8, p: 1 })
  const current = await hashPassword('correct horse battery')
  assert.match(current, /^scrypt\$131072\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{88}$/)
  assert.equal(await verifyPassword('correct horse battery', current), true)
  assert.equal(await verifyPassword('wrong horse battery', current), false)
  assert.equal(needsRehash(current), false)
  const old = await hashPassword('correct horse battery', { N: 16384, r: 8, p: 1 })
  assert.equal(await verifyPassword('correct horse battery', old), true)
  assert.equal(needsRehash(old), true)
  // Out-of-bounds parameters in a stored hash are refused, not computed.
  assert.equal(await verifyPassword('x', 'scrypt$4194304$8$1$AAAA$AAAA'), false)
  assert.equal(await verifyPassword('x', 'scrypt$1000$8$1$AAAA$AAAA'), false)
})
