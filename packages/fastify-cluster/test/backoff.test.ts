import { test } from 'node:test'
import assert from 'node:assert/strict'
import { consecutiveFailures, crashLoopTripped, recordFailure, restartDelay } from '../src/primary/backoff.ts'

const backoff = { initialDelay: 100, maxDelay: 15000, factor: 2, resetAfter: 60000 }
const guard = { maxFailures: 10, window: 60000 }

test('restart delay grows exponentially from initialDelay and stops at maxDelay', () => {
  const delays = Array.from({ length: 10 }, (_, i) => restartDelay(i, backoff))
  assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000])
  assert.equal(restartDelay(-1, backoff), 100)
})

test('a worker that stayed ready for resetAfter starts a fresh backoff; a quick failure adds one', () => {
  assert.equal(consecutiveFailures(5, 1000, 1000 + 60000, backoff), 1)
  assert.equal(consecutiveFailures(5, 1000, 1000 + 59999, backoff), 6)
  assert.equal(consecutiveFailures(0, undefined, 5000, backoff), 1, 'never ready: counts as a failure in a row')
  assert.equal(consecutiveFailures(3, undefined, 500000, backoff), 4)
})

test('the crash-loop guard trips at maxFailures inside the window, and old failures slide out', () => {
  let failures: number[] = []
  for (let i = 0; i < 9; i++) failures = recordFailure(failures, i * 1000, guard)
  assert.equal(crashLoopTripped(failures, guard), false)
  failures = recordFailure(failures, 9000, guard)
  assert.equal(crashLoopTripped(failures, guard), true)

  let spaced: number[] = []
  for (let i = 0; i < 30; i++) spaced = recordFailure(spaced, i * 7000, guard)
  assert.equal(crashLoopTripped(spaced, guard), false, 'one failure every 7 s is 9 per minute: never trips')
  assert.equal(spaced.length, 9)
})
