/**
 * Request rate per worker slot over a sliding window, from the monotonic per-slot request totals the
 * cluster scrape computes, and the spread of those rates.
 */
export interface Spread {
  /** Requests per second per slot over the window. */
  rates: Map<number, number>
  /** max / mean of the slot rates: 1 = perfectly even; with N slots, N = one slot takes everything. NaN with no traffic. */
  maxOverMean: number
  /** Coefficient of variation: population standard deviation / mean of the slot rates. 0 = even. NaN with no traffic. */
  cv: number
  /** Seconds the rates were actually measured over (≤ the window). */
  seconds: number
}

export function spreadOf (rates: number[]): { maxOverMean: number, cv: number } {
  if (rates.length === 0) return { maxOverMean: NaN, cv: NaN }
  const mean = rates.reduce((a, b) => a + b, 0) / rates.length
  if (!(mean > 0)) return { maxOverMean: NaN, cv: NaN }
  const max = Math.max(...rates)
  const variance = rates.reduce((a, r) => a + (r - mean) ** 2, 0) / rates.length
  return { maxOverMean: max / mean, cv: Math.sqrt(variance) / mean }
}

export class RateWindow {
  private history: Array<{ t: number, totals: Map<number, number> }> = []

  /** `windowMs`: how far back rates look; `minMs`: shortest span worth a rate. */
  constructor (readonly windowMs: number, readonly minMs = 1000) {}

  /** Record the per-slot totals seen at time `t` (ms) and return the spread over the window, if it can be measured yet. */
  add (t: number, totals: Map<number, number>, slots: number[]): Spread | undefined {
    this.history.push({ t, totals: new Map(totals) })
    // Keep the newest sample at or before the window start, so a full window can be measured.
    while (this.history.length > 2 && (this.history[1]?.t ?? Infinity) <= t - this.windowMs) this.history.shift()
    const oldest = this.history[0]
    if (oldest === undefined || oldest.t === t) return undefined
    let base = oldest
    if (base.t < t - this.windowMs) {
      // A sample older than the window: use the oldest one inside it if there is one with enough span.
      const inside = this.history.find((h) => h.t >= t - this.windowMs && h.t < t)
      if (inside !== undefined && t - inside.t >= this.minMs) base = inside
    }
    const ms = t - base.t
    if (ms < this.minMs) return undefined
    const rates = new Map<number, number>()
    for (const slot of slots) {
      const now = totals.get(slot) ?? 0
      const then = base.totals.get(slot) ?? now
      rates.set(slot, Math.max(0, now - then) / (ms / 1000))
    }
    return { rates, ...spreadOf([...rates.values()]), seconds: ms / 1000 }
  }
}
