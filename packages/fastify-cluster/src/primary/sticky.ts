import type { Worker } from 'node:cluster'
import type { Server } from 'node:net'
import type { Logger } from 'pino'
import { acceptConnections, handOver, type Chooser, type Incoming } from './handover.js'

/**
 * Sticky balancing (`balance: 'sticky'`): the primary owns the listening socket (paused on accept,
 * it never parses HTTP) and hands each connection to the worker of the slot its client address
 * hashes to, so every connection from one address reaches the same worker: Socket.IO long-polling,
 * and any in-memory per-client state, work across workers. The same hand-over as
 * `@socket.io/sticky`'s setupPrimary, by client address instead of by session id.
 *
 * A session never moves while its worker lives. The hash is rendezvous hashing (highest random
 * weight) over the CONFIGURED slots, not the ready ones: an address belongs to its slot whether or
 * not the slot's worker is up. A connection whose slot has no serving worker (starting, restarting
 * after a crash or a hang, backing off) waits in the primary for that slot's worker, up to
 * `stickyWait` ms after the slot went down and at most `stickyQueue` connections per slot. Past the
 * wait (a slot in a crash loop, a long backoff) or with the slot's queue full, its addresses fall
 * back to the hash over the slots that serve, and go home when the slot serves again (their sessions
 * made meanwhile are lost then: a fallback is for a slot that is really out). With no slot serving
 * at all, connections wait for the first (still at most `stickyQueue` per slot; past that, closed).
 *
 * A worker is serving while it is ready, not asked to exit and not hung (the watchdog's judgement):
 * a hung worker leaves the rotation the moment it is judged hung, its addresses wait for its
 * replacement. On a reload or recycle the slot's new worker takes its addresses the moment it is
 * ready (the old one, draining, gets no new connection). Scaling up adds a slot to the hash once its
 * first worker is ready (about 1/n of the addresses move to it); scaling down removes one (its
 * addresses move).
 */

/** What the sticky listener needs from the supervisor: wired in supervisor.ts. */
export interface StickySlots {
  /** The slot ids the hash runs over. */
  configured (): readonly number[]
  /** The worker serving `slotId` now (ready, not exiting, not hung), if any. */
  serving (slotId: number): Worker | undefined
  /** Subscribe to slot changes: `ready` (a worker serves it now), `down` (its worker left), `hung`. */
  onChange (fn: (slotId: number, what: 'ready' | 'down' | 'hung') => void): void
  /** The shutdown began: stop accepting. */
  onShutdown (fn: () => void): void
  /** A monotonic clock, ms. */
  now (): number
  readonly log: Logger
}

export interface StickyOptions {
  port: number
  host: string
  /** ms a connection waits for its slot's worker (counted from when the slot went down). */
  stickyWait: number
  /** Connections waiting per slot at most. */
  stickyQueue: number
  proxyProtocol: boolean
}

/** FNV-1a, 32 bits: a client address in, a well-spread integer out. */
export function addressHash (address: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < address.length; i++) {
    h ^= address.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** murmur3's 32-bit finalizer over (address hash, slot): the slot's score for that address. */
function score (hash: number, slot: number): number {
  let h = (hash ^ Math.imul(slot + 1, 0x9e3779b1)) >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The slot an address hash goes to among `slots` (rendezvous hashing), undefined when there is none. */
export function pickSlot (hash: number, slots: Iterable<number>): number | undefined {
  let best: number | undefined
  let bestScore = -1
  for (const slot of slots) {
    const s = score(hash, slot)
    if (s > bestScore || (s === bestScore && best !== undefined && slot < best)) { best = slot; bestScore = s }
  }
  return best
}

/** What the router sees at one instant. */
export interface RouteView {
  configured: readonly number[]
  /** Slots with a serving worker. */
  serving: ReadonlySet<number>
  /** ms since the slot last had a serving worker (0 for a serving slot). */
  downFor: (slot: number) => number
  /** Connections waiting for the slot now. */
  queued: (slot: number) => number
}

export type Route =
  | { action: 'hand', slot: number, fallback: boolean }
  /** Wait for `slot`'s worker; `ms`: re-decide then (undefined: when any slot serves). */
  | { action: 'wait', slot: number, ms: number | undefined }
  | { action: 'refuse', reason: string }

/**
 * Where a connection from an address with hash `hash` goes now. Pure: the listener calls it on
 * accept, when a wait expires and when a slot serves again.
 */
export function route (hash: number, view: RouteView, limits: { wait: number, queue: number }): Route {
  const home = pickSlot(hash, view.configured)
  if (home !== undefined && view.serving.has(home)) return { action: 'hand', slot: home, fallback: false }
  if (home !== undefined) {
    const left = limits.wait - view.downFor(home)
    if (left > 0 && view.queued(home) < limits.queue) return { action: 'wait', slot: home, ms: left }
  }
  const other = pickSlot(hash, view.serving)
  if (other !== undefined) return { action: 'hand', slot: other, fallback: true }
  const slot = home ?? -1
  return view.queued(slot) < limits.queue ? { action: 'wait', slot, ms: undefined } : { action: 'refuse', reason: 'no worker serves and the queue is full' }
}

/** Connections in a row from one address after which the listener warns (once) that it looks like a proxy. */
export const ONE_ADDRESS_WARNING_AFTER = 100

export interface StickyBalancer {
  readonly server: Server
  /** Connections handed to a worker so far. */
  readonly handed: number
  /** Handed to a slot other than the address's own (its slot was down past stickyWait). */
  readonly fallbacks: number
  /** Waiting in the primary now. */
  readonly waiting: number
}

interface Waiting { conn: Incoming, hash: number, slot: number, onClose: () => void }

/**
 * Place the connections of `servers`, the listening sockets the primary owns (owned-listener.ts:
 * bound at start, inherited from systemd, or handed over by an upgrading primary, which also
 * listens on them, closes them and reports a taken port before anything is forked).
 */
export function startSticky (slots: StickySlots, options: StickyOptions, servers: readonly Server[]): StickyBalancer {
  const log = slots.log
  const limits = { wait: options.stickyWait, queue: options.stickyQueue }
  /** When each slot last stopped serving (absent: serving, or never seen down). */
  const downSince = new Map<number, number>()
  const started = slots.now()
  for (const id of slots.configured()) downSince.set(id, started)
  let waiting: Waiting[] = []
  let timer: NodeJS.Timeout | undefined
  let timerDue = Infinity
  let handed = 0
  let fallbacks = 0
  let closed = false
  let sameAddress = { address: '', count: 0, warned: false }

  function view (): RouteView {
    const configured = slots.configured()
    const serving = new Set<number>()
    const now = slots.now()
    for (const id of new Set([...configured, ...downSince.keys()])) {
      if (slots.serving(id) !== undefined) { serving.add(id); downSince.delete(id) } else if (!downSince.has(id)) downSince.set(id, now)
    }
    const counts = new Map<number, number>()
    for (const w of waiting) counts.set(w.slot, (counts.get(w.slot) ?? 0) + 1)
    return {
      configured,
      serving,
      downFor: (slot) => serving.has(slot) ? 0 : now - (downSince.get(slot) ?? now),
      queued: (slot) => counts.get(slot) ?? 0
    }
  }

  function place (conn: Incoming, hash = addressHash(conn.address), attempt = 0): void {
    if (closed) { conn.socket.destroy(); return }
    // The common case first, without building the whole view: the address's slot serves (route()'s first rule).
    const home = pickSlot(hash, slots.configured())
    const worker = home === undefined ? undefined : slots.serving(home)
    if (worker !== undefined && home !== undefined) { send(worker, conn, hash, attempt, false); return }
    const r = route(hash, view(), limits)
    if (r.action === 'refuse') { conn.socket.destroy(); return }
    if (r.action === 'wait') {
      // A client that leaves while it waits frees its place.
      const onClose = (): void => { waiting = waiting.filter((w) => w.conn !== conn) }
      conn.socket.once('close', onClose)
      waiting.push({ conn, hash, slot: r.slot, onClose })
      arm(r.ms)
      return
    }
    const target = slots.serving(r.slot)
    if (target === undefined) { conn.socket.destroy(); return }
    send(target, conn, hash, attempt, r.fallback)
  }

  function send (worker: Worker, conn: Incoming, hash: number, attempt: number, fallback: boolean): void {
    handed++
    if (fallback) fallbacks++
    handOver(worker, conn, (err) => {
      if (err === null) return
      // Still ours: the worker died in between. Place it again (its slot is down now), once.
      if (attempt === 0 && !conn.socket.destroyed) place(conn, hash, 1)
      else conn.socket.destroy()
    })
  }

  /** Re-decide the waiting connections after `ms` (the earliest expiry of a wait). */
  function arm (ms: number | undefined): void {
    if (ms === undefined) return
    const due = slots.now() + ms
    if (timer !== undefined && timerDue <= due) return
    clearTimeout(timer)
    timerDue = due
    timer = setTimeout(() => { timer = undefined; timerDue = Infinity; replay() }, Math.max(1, Math.ceil(ms)))
  }

  function replay (): void {
    const all = waiting
    waiting = []
    for (const w of all) {
      w.conn.socket.removeListener('close', w.onClose)
      if (w.conn.socket.destroyed) continue
      place(w.conn, w.hash)
    }
  }

  slots.onChange((slotId, what) => {
    if (what === 'ready') { downSince.delete(slotId); if (waiting.length > 0) replay(); return }
    if (!downSince.has(slotId) && slots.serving(slotId) === undefined) downSince.set(slotId, slots.now())
  })

  const chooser: Chooser = {
    place (conn) {
      if (!options.proxyProtocol) noteAddress(conn.address)
      place(conn)
    }
  }

  /** Behind a proxy without the PROXY protocol every client has the proxy's address: say so once. */
  function noteAddress (address: string): void {
    if (sameAddress.warned) return
    if (address !== sameAddress.address) { sameAddress = { address, count: 1, warned: false }; return }
    if (++sameAddress.count < ONE_ADDRESS_WARNING_AFTER) return
    sameAddress.warned = true
    log.warn({ balance: 'sticky', address, connections: sameAddress.count },
      `balance sticky: the last ${sameAddress.count} connections all came from ${address}: behind a proxy or load balancer every client has its address, ` +
      'so one worker gets them all; have the proxy send the PROXY protocol and set proxyProtocol (env NCLUST_PROXY_PROTOCOL=1)')
  }

  for (const server of servers) {
    acceptConnections(server, chooser, {
      proxyProtocol: options.proxyProtocol,
      onRefused: (reason, socket) => log.debug({ reason, remoteAddress: socket.remoteAddress }, `balance sticky: connection closed: ${reason}`)
    })
  }
  const server = servers[0] as Server
  log.info({ balance: 'sticky', stickyWait: limits.wait, stickyQueue: limits.queue, proxyProtocol: options.proxyProtocol },
    'balance sticky: the primary hands each client address to one worker' + (options.proxyProtocol ? ' (the address a PROXY protocol header names)' : ''))
  // Shutdown: stop accepting before the workers are asked to drain ('shutdown' comes first).
  slots.onShutdown(() => {
    closed = true
    clearTimeout(timer)
    for (const w of waiting.splice(0)) w.conn.socket.destroy()
  })
  return {
    server,
    get handed () { return handed },
    get fallbacks () { return fallbacks },
    get waiting () { return waiting.length }
  }
}
