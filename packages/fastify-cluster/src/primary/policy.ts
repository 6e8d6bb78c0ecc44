/**
 * The decisions of the watchdog, the recycler, the scaler and the start verdict, as pure functions
 * of their inputs and the time (and randomness) passed in: unit-tested without sleeps.
 */

/** Requests after which one worker is recycled: `max + random integer in [0, jitter]`; Infinity when off. */
export function requestLimit (max: number, jitter: number, random: () => number = Math.random): number {
  if (max <= 0) return Infinity
  return max + Math.floor(random() * (Math.max(0, jitter) + 1))
}

/**
 * A ready worker whose last heartbeat is older than `timeout` ms is hung (never when timeout is 0).
 * `baseline`: the watchdog's last re-baseline (see {@link watchdogTick}): no worker is judged on
 * silence from before it. Times are on a monotonic clock (see `monotonicNow` in slots.ts).
 */
export function isHung (lastBeat: number, now: number, timeout: number, baseline = -Infinity): boolean {
  return timeout > 0 && now - Math.max(lastBeat, baseline) > timeout
}

/**
 * One watchdog tick. The tick is due every `interval` ms; one that fires more than 2 × interval
 * after the previous one means the primary itself did not run (its loop stalled, the VM was paused
 * or restored): the workers' heartbeats are waiting unread in the IPC pipes, so their ages say
 * nothing. Such a tick re-baselines (`baseline`: now) and judges nobody; an on-time one keeps the
 * baseline it had.
 */
export function watchdogTick (previousTick: number, now: number, interval: number, baseline: number): { late: boolean, baseline: number } {
  const late = now - previousTick > 2 * interval
  return { late, baseline: late ? now : baseline }
}

/** Per-slot memory of workers found over maxRss right after they started. */
export interface RssHold {
  /** No maxRss recycle of this slot before this time (ms, the machine's monotonic clock). */
  until: number
  /** The last hold's length, ms: doubles with each fresh worker over the limit. */
  delay: number
}

export interface RssPolicy {
  /** MB; 0 is off. */
  maxRss: number
  /** A worker over the limit within this many ms of being ready is "fresh": holding, not recycling. */
  freshMs: number
  /** First hold, ms; then doubled up to `maxHold`. */
  initialHold: number
  maxHold: number
}

/** Holds of 30 s doubling up to 10 min. `freshMs` comes from the heartbeat interval (see recycle.ts). */
export const RSS_POLICY = { initialHold: 30_000, maxHold: 600_000 } as const

export type RssDecision =
  | { action: 'ok', hold: RssHold }
  /** Over the limit and not fresh: replace it. */
  | { action: 'recycle', hold: RssHold }
  /** Over the limit right after start: recycling would loop; log it once, start (or extend) a hold. */
  | { action: 'hold', hold: RssHold }
  /** Over the limit, inside a hold: nothing to do until it ends. */
  | { action: 'wait', hold: RssHold }

/**
 * What to do with a worker's RSS sample. A worker over `maxRss` is recycled, unless it went over
 * within `freshMs` of being ready: then its replacement would be over too (the app's baseline is
 * above the limit), so the slot holds for `initialHold`, doubling on each repeat up to `maxHold`.
 * After a hold a recycle is tried again: a bounded loop with back-off, never a tight one.
 */
export function rssDecision (rssBytes: number, readyAt: number, now: number, hold: RssHold, policy: RssPolicy): RssDecision {
  if (policy.maxRss <= 0 || rssBytes <= policy.maxRss * 1024 * 1024) {
    return { action: 'ok', hold }
  }
  if (now < hold.until) return { action: 'wait', hold }
  if (now - readyAt < policy.freshMs) {
    const delay = hold.delay === 0 ? policy.initialHold : Math.min(policy.maxHold, hold.delay * 2)
    return { action: 'hold', hold: { until: now + delay, delay } }
  }
  return { action: 'recycle', hold }
}

/** True once a slot that was never ready has failed its first try and all `retries` more. */
export function startGivesUp (startFailures: number, retries: number): boolean {
  return startFailures > retries
}

/** Slot ids to add and to remove (highest first) to go from `from` slots to `to` (at least 1). */
export function scalePlan (from: number, to: number): { add: number[], remove: number[] } {
  const target = Math.max(1, Math.floor(to))
  if (target >= from) return { add: Array.from({ length: target - from }, (_, i) => from + i), remove: [] }
  return { add: [], remove: Array.from({ length: from - target }, (_, i) => from - 1 - i) }
}

/**
 * Old workers a rolling reload lets drain at once: ⌈workers / 2⌉, at least 2. Once a slot's new
 * worker is ready, its old one drains while the next slot's new worker starts; with at most K old
 * workers draining (and one new worker starting) the cluster runs at most N + K + 1 processes,
 * and a pass takes at most N × (one worker's start) + ⌈N / K⌉ × shutdownTimeout, which is
 * N × start + 2 × shutdownTimeout: whatever the clients do, never N × the drain deadline.
 */
export function reloadDrainLimit (workers: number): number {
  return Math.max(2, Math.ceil(workers / 2))
}

/** The bound above, ms: what a caller of `nclust reload --timeout` should wait at most. */
export function reloadBound (workers: number, startMs: number, shutdownTimeout: number): number {
  return workers * startMs + Math.ceil(workers / reloadDrainLimit(workers)) * shutdownTimeout
}
