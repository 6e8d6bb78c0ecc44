import { test } from 'node:test'
import assert from 'node:assert/strict'
import { monotonicNow } from '../src/primary/slots.ts'
import { isHung, reloadBound, watchdogTick, reloadDrainLimit, requestLimit, rssDecision, RSS_POLICY, scalePlan, startGivesUp, type RssHold } from '../src/primary/policy.ts'

test('requestLimit: maxRequests plus 0..jitter, Infinity when off', () => {
  assert.equal(requestLimit(0, 50, () => 0.99), Infinity)
  assert.equal(requestLimit(1000, 0, () => 0.99), 1000)
  assert.equal(requestLimit(1000, 50, () => 0), 1000)
  assert.equal(requestLimit(1000, 50, () => 0.999999), 1050)
  assert.equal(requestLimit(1000, 50, () => 0.5), 1025)
  const seen = new Set(Array.from({ length: 51 }, (_, i) => requestLimit(1000, 50, () => (i + 0.5) / 51)))
  assert.equal(seen.size, 51, 'every value of 1000..1050 is reachable')
})

test('isHung: silent strictly longer than the timeout; never when the timeout is 0', () => {
  assert.equal(isHung(1000, 31000, 30000), false)
  assert.equal(isHung(1000, 31001, 30000), true)
  assert.equal(isHung(1000, 10_000_000, 0), false)
})

test('rssDecision: recycles a worker that grew past maxRss, holds (doubling) one that starts over it', () => {
  const policy = { ...RSS_POLICY, freshMs: 10_000, maxRss: 100 }
  const MB = 1024 * 1024
  const none: RssHold = { until: 0, delay: 0 }
  const readyAt = 1_000_000
  assert.deepEqual(rssDecision(100 * MB, readyAt, readyAt + 60_000, none, policy), { action: 'ok', hold: none })
  assert.equal(rssDecision(101 * MB, readyAt, readyAt + 60_000, none, policy).action, 'recycle')
  assert.equal(rssDecision(999 * MB, readyAt, readyAt + 60_000, none, { ...policy, maxRss: 0 }).action, 'ok', 'off')

  // Over the limit 2 s after ready: a hold of 30 s, not a recycle.
  const first = rssDecision(150 * MB, readyAt, readyAt + 2000, none, policy)
  assert.deepEqual(first, { action: 'hold', hold: { until: readyAt + 2000 + 30_000, delay: 30_000 } })
  // Inside the hold: nothing, even once the worker is no longer fresh.
  assert.deepEqual(rssDecision(150 * MB, readyAt, readyAt + 20_000, first.hold, policy), { action: 'wait', hold: first.hold })
  // After the hold the old worker is recycled; its fresh replacement over the limit again doubles the hold.
  assert.equal(rssDecision(150 * MB, readyAt, readyAt + 40_000, first.hold, policy).action, 'recycle')
  const next = rssDecision(150 * MB, readyAt + 41_000, readyAt + 42_000, first.hold, policy)
  assert.deepEqual(next, { action: 'hold', hold: { until: readyAt + 42_000 + 60_000, delay: 60_000 } })
  let hold = next.hold
  for (let i = 0; i < 10; i++) hold = rssDecision(150 * MB, hold.until, hold.until + 1, hold, policy).hold
  assert.equal(hold.delay, RSS_POLICY.maxHold, 'the hold is capped')
})

test('startGivesUp: after the first try and every retry failed', () => {
  assert.equal(startGivesUp(1, 2), false)
  assert.equal(startGivesUp(2, 2), false)
  assert.equal(startGivesUp(3, 2), true)
  assert.equal(startGivesUp(1, 0), true, 'startRetries 0: the first failure is the verdict')
})

test('scalePlan: new slot ids going up, the highest slots first going down, never below 1', () => {
  assert.deepEqual(scalePlan(2, 4), { add: [2, 3], remove: [] })
  assert.deepEqual(scalePlan(4, 1), { add: [], remove: [3, 2, 1] })
  assert.deepEqual(scalePlan(2, 2), { add: [], remove: [] })
  assert.deepEqual(scalePlan(3, 0), { add: [], remove: [2, 1] })
})

test('reload drain limit and bound: at most 2 drain deadlines per pass, whatever N', () => {
  assert.deepEqual([1, 2, 3, 4, 8, 9, 64].map(reloadDrainLimit), [2, 2, 2, 2, 4, 5, 32])
  for (const n of [1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 1024]) {
    assert.ok(Math.ceil(n / reloadDrainLimit(n)) <= 2, `N=${n}`)
    assert.equal(reloadBound(n, 1000, 30_000), n * 1000 + Math.ceil(n / reloadDrainLimit(n)) * 30_000)
  }
  assert.equal(reloadBound(8, 2000, 30_000), 76_000)
})

test('watchdog: a tick that fired very late (the primary stalled, the VM paused) re-baselines instead of judging', () => {
  const timeout = 30_000
  const every = 1000
  let baseline = -Infinity
  let previous = 0
  const lastBeat = 1900 // the worker's last heartbeat the primary read before it stalled
  const tick = (at: number): boolean => {
    const t = watchdogTick(previous, at, every, baseline)
    previous = at
    baseline = t.baseline
    return !t.late && isHung(lastBeat, at, timeout, baseline)
  }
  for (let at = 1000; at <= 3000; at += 1000) assert.equal(tick(at), false)
  // 40 s without a tick: the worker's heartbeats wait unread in its pipe; its age says nothing.
  assert.equal(watchdogTick(3000, 43_000, every, baseline).late, true)
  assert.equal(tick(43_000), false, 'the late tick kills nobody')
  assert.equal(baseline, 43_000)
  assert.equal(tick(44_000), false, 'the next tick judges from the new baseline, not from the old heartbeat')
  // Still silent a whole timeout after the re-baseline: hung, as always.
  for (let at = 45_000; at <= 73_000; at += 1000) assert.equal(tick(at), false, `at ${at}`)
  assert.equal(tick(74_000), true)
  // An on-time tick keeps the baseline; without one the old rule stands.
  assert.deepEqual(watchdogTick(1000, 2000, every, 500), { late: false, baseline: 500 })
  assert.equal(isHung(1000, 31_001, 30_000, 20_000), false)
  assert.equal(isHung(1000, 50_001, 30_000, 20_000), true)
})

test('liveness times are on a monotonic clock: a wall-clock step of an hour does not age a heartbeat', () => {
  const realNow = Date.now
  const t0 = monotonicNow()
  Date.now = () => realNow() + 3_600_000
  try {
    const t1 = monotonicNow()
    assert.ok(t1 - t0 >= 0 && t1 - t0 < 60_000, `the clock moved ${t1 - t0} ms`)
    assert.equal(isHung(t0, t1, 30_000), false)
  } finally {
    Date.now = realNow
  }
})
