import cluster, { type Worker } from 'node:cluster'
import { createServer, Socket, type AddressInfo, type Server } from 'node:net'
import type { PrimaryHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { message, type ConnectionMessage } from '../messages.js'
import { addressHash, pickSlot } from './sticky.js'
import { CONNECTION_BACK } from '../worker/owned-accept.js'
import { rehomeOrphansWith } from './handoffs.js'

/**
 * The primary owns the listening socket(s) and hands each accepted connection (paused, unread) to a
 * ready worker over IPC, the way balance 'sticky' does (sticky.ts), with a pluggable chooser:
 * round robin for balance 'primary', the client-address hash for 'sticky'.
 *
 * Why the primary owns it rather than node:cluster's round-robin handle: a socket systemd passed
 * (LISTEN_FDS) or an old primary handed over must outlive every worker, and node:cluster closes its
 * handle when the last worker leaves (a crash of every worker would close systemd's socket for good),
 * and keeps it private, so it cannot be handed to a new primary. Here the socket is ours: it closes
 * at shutdown, or is handed to the next primary on `nclust upgrade`, which then stops accepting here
 * while the same socket keeps accepting there (no refused connection, nothing reset: the kernel's
 * queue belongs to the socket, not to a process).
 *
 * Workers are told by env (ACCEPT_ENV) not to listen and to take connections from the primary.
 */

export const ACCEPT_ENV = 'NCLUST_ACCEPT_FROM_PRIMARY'
/** What a worker reports as its address (the primary's listening address). */
export const ADDRESS_ENV = 'NCLUST_LISTEN_ADDRESS'

/** Which live slot gets the next connection; undefined when none is live. */
export type Chooser = (socket: Socket, slots: readonly number[]) => number | undefined

/** The slot after `last` in `slots` (ascending), wrapping; the first one when `last` is gone or unset. Pure. */
export function nextSlot (slots: readonly number[], last: number | undefined): number | undefined {
  if (slots.length === 0) return undefined
  const sorted = [...slots].sort((a, b) => a - b)
  if (last === undefined) return sorted[0]
  return sorted.find((s) => s > last) ?? sorted[0]
}

export function roundRobin (): Chooser {
  let last: number | undefined
  return (_socket, slots) => { last = nextSlot(slots, last); return last }
}

export function byClientAddress (): Chooser {
  return (socket, slots) => socket.remoteAddress === undefined ? undefined : pickSlot(addressHash(socket.remoteAddress), slots)
}

const MAX_WAITING = 1024

export interface OwnedListener {
  readonly servers: Server[]
  /** The listening descriptors, to hand to a new primary. */
  fds (): number[]
  /** The address workers report ("http://127.0.0.1:3000"). */
  readonly address: string
  readonly handed: number
  /** Stop accepting here (the socket stays open wherever else it is held); hand what waits. */
  stopAccepting (): Promise<void>
  /** Start handing connections to `handle`'s ready workers (they wait in the backlog until then). */
  attach (handle: PrimaryHandle): void
}

/**
 * Listen on `fds` (inherited) or bind `options.port`/`host`, before any worker is forked (a port in
 * use fails the start); connections wait until {@link OwnedListener.attach} and a ready worker.
 * `chooser` undefined: the caller places the connections itself (balance 'sticky': sticky.ts
 * accepts on `servers`).
 */
export async function openOwnedListener (options: ResolvedOptions, chooser: Chooser | undefined, fds?: number[], defer?: { address: string }): Promise<OwnedListener> {
  const live = new Map<number, { pid: number, worker: Worker }>()
  const waiting: Socket[] = []
  let handed = 0
  let closed = false
  let shuttingDown = false

  function hand (socket: Socket, not?: number): void {
    if (chooser === undefined) return
    const slot = chooser(socket, [...live.keys()].filter((s) => s !== not))
    const target = slot === undefined ? undefined : live.get(slot)
    if (target === undefined) {
      if (waiting.length >= MAX_WAITING) { socket.destroy(); return }
      waiting.push(socket)
      return
    }
    handed++
    target.worker.send(message<ConnectionMessage>({ type: 'connection' }), socket, (err: Error | null) => {
      if (err !== null) socket.destroy()
    })
  }
  function attach (handle: PrimaryHandle): void {
    if (chooser !== undefined) attachChooser(handle)
    handle.events.on('shutdown', () => {
      // Balance 'primary': keep handing connections to the draining workers while their servers
      // still accept (the drain's delay), as node:cluster's handle did; stop once none is left.
      // Balance 'sticky' (no chooser here): stop accepting at once, as sticky.ts always has.
      shuttingDown = true
      if (chooser === undefined || live.size === 0) void stopAccepting()
    })
    if (deferred.length > 0) {
      // Handed over by an upgrading primary: accept only once every worker is ready. Until then the
      // old primary accepts alone, and if this one fails to start and is killed, it never held a
      // connection (an accepted one would be reset with it).
      handle.ready().then(async () => {
        for (const listen of deferred.splice(0)) await listen()
      }).catch((err: unknown) => { if (!closed) handle.logger.error({ err }, 'cannot serve the inherited socket') })
    }
    handle.logger.info({ balance: options.balance, address, inherited: fds ?? [] },
      `the primary ${fds !== undefined && fds.length > 0 ? `serves the inherited socket${fds.length > 1 ? 's' : ''} (fd ${fds.join(', ')})` : 'listens'} on ${address} and hands connections to workers`)
  }
  /** No more connections for `worker`'s slot; hand `socket` (unread) to another, or close it. */
  function handElsewhere (worker: Worker, socket: Socket): void {
    let from: number | undefined
    for (const [slot, l] of live) if (l.pid === worker.process.pid) from = slot
    if (from !== undefined) live.delete(from)
    if (closed) { socket.destroy(); return }
    if (shuttingDown && live.size === 0) { socket.destroy(); void stopAccepting(); return }
    hand(socket, from)
  }
  function attachChooser (handle: PrimaryHandle): void {
    cluster.on('message', (worker: Worker, raw: unknown, back: unknown) => {
      if (typeof raw !== 'object' || raw === null || (raw as { nclust?: unknown }).nclust !== 1) return
      const type = (raw as { type?: unknown }).type
      // A worker that was closing gave a connection back (../worker/owned-accept.ts): hand it to another.
      if (type === CONNECTION_BACK && back instanceof Socket) handElsewhere(worker, back)
      // A worker with an uncaught error is on its way out: hand it nothing more (the machine keeps it
      // 'ready' until it exits, so that its exit counts as unexpected).
      if (type === 'fatal') for (const [slot, l] of live) if (l.pid === worker.process.pid) live.delete(slot)
    })
    // Handed to a worker that exited before it took them (handoffs.ts): unread, so another one serves them.
    const stopRehoming = rehomeOrphansWith((socket, worker) => { handElsewhere(worker, socket); return true })
    handle.events.on('closed', stopRehoming)
    handle.events.on('state', (e) => {
      if (e.to === 'ready') {
        const worker = Object.values(cluster.workers ?? {}).find((w) => w?.process.pid === e.pid)
        if (worker === undefined) return
        live.set(e.workerId, { pid: e.pid, worker })
        for (const socket of waiting.splice(0)) hand(socket)
      } else if (live.get(e.workerId)?.pid === e.pid) {
        // During a shutdown a draining worker stays a target until it stops or gives connections
        // back: its server still accepts through the drain's delay (readiness 503 for load balancers).
        if (!shuttingDown || e.to === 'stopped') live.delete(e.workerId)
        if (shuttingDown && live.size === 0) void stopAccepting()
      }
    })
  }

  const servers: Server[] = []
  const deferred: Array<() => Promise<void>> = []
  const targets: Array<{ fd: number } | { port: number, host: string }> = fds !== undefined && fds.length > 0
    ? fds.map((fd) => ({ fd }))
    : [{ port: options.port, host: options.host }]
  for (const target of targets) {
    const server = createServer({ pauseOnConnect: true })
    if (chooser !== undefined) {
      server.on('connection', (socket: Socket) => {
        if (closed) { socket.destroy(); return }
        hand(socket)
      })
    }
    const listen = async (): Promise<void> => await new Promise<void>((resolve, reject) => {
      if (closed) { resolve(); return }
      server.once('error', reject)
      server.listen(target, () => { server.off('error', reject); resolve() })
    })
    if (defer !== undefined) deferred.push(listen)
    else await listen()
    server.on('error', () => {}) // a listening socket has no error after listen() succeeded
    servers.push(server)
  }
  const a = servers[0]?.address() as AddressInfo | string | null
  const address = defer !== undefined ? defer.address : typeof a === 'object' && a !== null ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : String(a)

  async function stopAccepting (): Promise<void> {
    if (closed) return
    closed = true
    // close() stops accepting at once (the handle closes synchronously); its callback would wait for
    // every connection this server ever counted, which the workers now own.
    for (const s of servers) s.close()
    for (const socket of waiting.splice(0)) socket.destroy()
  }
  return {
    attach,
    servers,
    fds: () => deferred.length > 0 ? [...(fds ?? [])] : servers.map((s) => (s as unknown as { _handle?: { fd?: number } | null })._handle?.fd ?? -1).filter((fd) => fd >= 0),
    address,
    get handed () { return handed },
    stopAccepting
  }
}
