import cluster, { type Worker } from 'node:cluster'
import { createServer, type Server, type Socket } from 'node:net'
import type { PrimaryHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { message, type ConnectionMessage } from '../messages.js'

/**
 * Sticky balancing (`balance: 'sticky'`): the primary owns the listening socket (paused on accept,
 * it never reads a byte) and hands each connection to the worker of the slot its client address
 * hashes to, so every connection from one address reaches the same worker: Socket.IO long-polling,
 * and any in-memory per-client state, work across workers.
 *
 * The hash is rendezvous hashing (highest random weight) over the live slots: each address scores
 * every slot and takes the highest. When a slot has no ready worker (crashed, backing off) only its
 * addresses move, to their second-best slot, and come back when it is ready again; the others never
 * move. A slot stays the unit: on reload or recycle the slot's new worker takes its share the moment
 * it is ready (the old one, draining, gets no new connection; its clients reconnect, as on any
 * restart). Scaling changes the set of slots, moving about 1/n of the addresses.
 *
 * The same hand-over as `@socket.io/sticky`'s setupPrimary, without reading the first request: the
 * primary never parses HTTP (see the README for why not, and what to do behind a proxy).
 */

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

/** Connections waiting for a first ready worker (at start, or every slot down at once) at most. */
const MAX_WAITING = 1024

export interface StickyBalancer {
  readonly server: Server
  /** Connections handed to a worker so far. */
  readonly handed: number
}

export function startSticky (handle: PrimaryHandle, options: ResolvedOptions): StickyBalancer {
  const log = handle.logger
  /** Slot → its current ready worker. A draining or stopped worker is never a target. */
  const live = new Map<number, { pid: number, worker: Worker }>()
  const waiting: Socket[] = []
  let handed = 0
  let closed = false

  function hand (socket: Socket): void {
    const address = socket.remoteAddress
    if (address === undefined) { socket.destroy(); return } // already gone
    const slot = pickSlot(addressHash(address), live.keys())
    const target = slot === undefined ? undefined : live.get(slot)
    if (target === undefined) {
      if (waiting.length >= MAX_WAITING) { socket.destroy(); return }
      waiting.push(socket)
      return
    }
    handed++
    // keepOpen false (default): once sent, the primary's copy is closed; the worker owns the socket.
    target.worker.send(message<ConnectionMessage>({ type: 'connection' }), socket, (err: Error | null) => {
      if (err !== null) socket.destroy() // the worker died in between; its client reconnects
    })
  }

  handle.events.on('state', (e) => {
    if (e.to === 'ready') {
      const worker = Object.values(cluster.workers ?? {}).find((w) => w?.process.pid === e.pid)
      if (worker === undefined) return
      live.set(e.workerId, { pid: e.pid, worker })
      for (const socket of waiting.splice(0)) hand(socket)
    } else if (live.get(e.workerId)?.pid === e.pid) {
      live.delete(e.workerId)
    }
  })

  const server = createServer({ pauseOnConnect: true }, (socket) => {
    if (closed) { socket.destroy(); return }
    hand(socket)
  })
  server.on('error', (err) => {
    log.fatal({ err, port: options.port, host: options.host }, `balance sticky: the primary cannot listen on ${options.host}:${options.port}: ${err.message}`)
    void handle.close().then(() => process.exit(1))
  })
  server.listen({ port: options.port, host: options.host }, () => {
    const a = server.address()
    log.info({ balance: 'sticky', address: a }, `balance sticky: the primary listens on ${typeof a === 'object' && a !== null ? `${a.address}:${a.port}` : String(a)} and hands each client address to one worker`)
  })
  // Shutdown: stop accepting before the workers are asked to drain ('shutdown' comes first).
  handle.events.on('shutdown', () => {
    closed = true
    server.close()
    for (const socket of waiting.splice(0)) socket.destroy()
  })
  return { server, get handed () { return handed } }
}
