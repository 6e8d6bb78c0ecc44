import type { SlotMachine } from './slots.js'
import type { Replacer } from './replace.js'
import { RSS_POLICY, rssDecision } from './policy.js'

/**
 * Recycling: a ready worker over `maxRequests` (plus its jitter) or over `maxRss` is handed to the
 * replacer, which replaces it surge-first, one slot at a time. Checked on each heartbeat. A worker
 * over maxRss right after it started is not recycled in a loop: the slot holds, with back-off.
 */
export function startRecycler (m: SlotMachine, replacer: Replacer): void {
  const { maxRequests, maxRss } = m.options
  if (maxRequests === 0 && maxRss === 0) return
  // "Right after start": within its first three samples (at least 3 s).
  const policy = { ...RSS_POLICY, maxRss, freshMs: Math.max(3000, 3 * m.options.heartbeatInterval) }
  m.onHeartbeat((proc) => {
    if (proc.state !== 'ready' || proc.recycling || proc.slot.current !== proc || m.shuttingDown) return
    if (proc.requests >= proc.requestLimit) {
      replacer.recycle(proc, 'maxRequests', proc.requests, proc.requestLimit)
      return
    }
    if (maxRss === 0) return
    const slot = proc.slot
    const d = rssDecision(proc.rss, proc.readyAt ?? proc.startedAt, m.now(), slot.rssHold, policy)
    slot.rssHold = d.hold
    const mb = Math.round(proc.rss / 1024 / 1024)
    if (d.action === 'recycle') replacer.recycle(proc, 'maxRss', mb, maxRss)
    else if (d.action === 'hold') {
      slot.log.warn({ workerPid: proc.pid, rssMb: mb, maxRss, holdMs: d.hold.delay },
        `worker ${slot.id} is over maxRss (${mb} MB > ${maxRss} MB) right after it started: not recycling it in a loop; next try in ${d.hold.delay}ms`)
    }
  })
}
