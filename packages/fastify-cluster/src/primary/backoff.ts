/**
 * Restart delays and the crash-loop guard, as pure functions of their inputs and the time you
 * pass in: the supervisor injects its monotonic clock (`monotonicNow`, slots.ts), tests inject numbers, nobody sleeps.
 */

export interface BackoffPolicy {
  /** Delay before the first restart of a slot, ms. */
  initialDelay: number
  /** Upper bound of the delay, ms. */
  maxDelay: number
  /** Growth per consecutive failure. */
  factor: number
  /** A worker that stays ready this long resets its slot's backoff to `initialDelay`, ms. */
  resetAfter: number
}

export interface CrashLoopPolicy {
  /** Unexpected exits of one slot within `window` that trip the guard. */
  maxFailures: number
  /** Sliding window, ms. */
  window: number
}

/** Delay before restart number `attempt` (0-based) of a slot: initialDelay * factor^attempt, capped. */
export function restartDelay (attempt: number, policy: BackoffPolicy): number {
  const raw = policy.initialDelay * Math.pow(policy.factor, Math.max(0, attempt))
  return Math.round(Math.min(policy.maxDelay, raw))
}

/**
 * Consecutive failures of a slot after its worker just exited unexpectedly: back to 1 when the
 * worker had been ready for at least `resetAfter` (a fresh incident), otherwise one more than
 * before. The restart delay is `restartDelay(consecutive - 1)`.
 */
export function consecutiveFailures (previous: number, readyAt: number | undefined, exitedAt: number, policy: BackoffPolicy): number {
  if (readyAt !== undefined && exitedAt - readyAt >= policy.resetAfter) return 1
  return previous + 1
}

/** Failure timestamps of one slot still inside the window at `now`, with `now` added. */
export function recordFailure (failures: readonly number[], now: number, policy: CrashLoopPolicy): number[] {
  return [...failures.filter((t) => now - t < policy.window), now]
}

/** True when the failures inside the window reach the limit: stop respawning. */
export function crashLoopTripped (failures: readonly number[], policy: CrashLoopPolicy): boolean {
  return failures.length >= policy.maxFailures
}
