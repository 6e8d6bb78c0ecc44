import cluster, { type Worker } from 'node:cluster'
import { Socket } from 'node:net'

/**
 * Connections Node's round-robin handed to a worker that died before taking them.
 *
 * With `balance: 'primary'` (cluster.SCHED_RR) the primary accepts each connection and sends its
 * handle to a worker over IPC (`{ cmd: 'NODE_CLUSTER', act: 'newconn', seq }`); it closes its own
 * copy only when the worker acknowledges (`{ cmd: 'NODE_CLUSTER', ack: seq, accepted }`), or hands
 * it to another worker when the worker declines. A worker that dies between the hand-off and the
 * acknowledgment (kill -9, OOM kill, a crash in the same instant) never answers, and Node neither
 * closes nor redistributes that handle (lib/internal/cluster/round_robin_handle.js, handoff(): the
 * callback that would close it never runs). The client's connection then stays open in the primary,
 * its request unread, until the primary exits: the client waits for its own timeout.
 * Measured with plain node:cluster (2 workers, 8 clients opening fresh connections, 20 kill -9):
 * 10 of 5,399 requests never answered, and the primary held 11 more sockets afterwards. It is the
 * write chaos.test saw unanswered for 15 s: sent just after a kill -9, waiting through the reloads.
 *
 * So the primary notes each hand-off's handle until the worker acknowledges it, and when the worker
 * has exited (or its IPC channel closed: no acknowledgment can come any more) closes the handles
 * left: the client sees a reset at once, like every other connection of the killed worker, and can
 * retry. The process's 'exit' is what counts: with a handle still in flight child_process postpones
 * the channel's 'disconnect' until the peer acknowledges the handle, which a dead worker never does,
 * so a worker killed mid hand-off emits 'exit' but never 'disconnect'.
 * Closing our copy is safe even if the worker did take the connection: the worker's descriptor keeps
 * the connection open, and only the last close ends it.
 *
 * It uses Node's internal cluster messages (stable from Node 16 to 24; the test in
 * test/handoffs.test.ts fails if they change): there is no public hook for them.
 */
interface RawHandle { close: () => void }
interface ClusterMessage { cmd?: unknown, act?: unknown, seq?: unknown, ack?: unknown }
const isClusterMessage = (m: unknown): m is ClusterMessage =>
  typeof m === 'object' && m !== null && (m as ClusterMessage).cmd === 'NODE_CLUSTER'

export function trackHandoffs (worker: Worker): void {
  const proc = worker.process as unknown as {
    send: (message: unknown, handle?: unknown, ...rest: unknown[]) => boolean
    on: (event: string, fn: (message: unknown) => void) => void
  }
  const pending = new Map<number, RawHandle>()
  const send = proc.send.bind(proc)
  proc.send = (message, handle, ...rest) => {
    if (isClusterMessage(message) && message.act === 'newconn' && typeof message.seq === 'number' &&
        typeof (handle as RawHandle | undefined)?.close === 'function') {
      pending.set(message.seq, handle as RawHandle)
    }
    return send(message, handle, ...rest)
  }
  proc.on('internalMessage', (message) => {
    if (isClusterMessage(message) && typeof message.ack === 'number') pending.delete(message.ack)
  })
  const closeLeft = (): void => {
    for (const handle of pending.values()) {
      try { handle.close() } catch {} // already closed elsewhere: nothing left to do
    }
    pending.clear()
    closeUnacknowledged(worker)
  }
  worker.once('disconnect', closeLeft)
  worker.process.once('exit', closeLeft)
}

/**
 * The same race through `worker.send(message, socket)`, the primary's own hand-over (owned-listener.ts
 * for balance 'primary', sticky.ts/handover.ts for 'sticky'): child_process keeps the primary's copy
 * of a sent socket until the worker acknowledges it (NODE_HANDLE_ACK; `_pendingMessage`), and queues
 * the next sockets behind it (`_handleQueue`); a worker that exits before it acknowledges leaves both
 * open for the primary's life, and postpones the channel's disconnect, which would close them.
 * Node internals (stable from Node 16 to 24; test/handoffs.test.ts fails if they change).
 *
 * A socket the worker never acknowledged never reached its JavaScript (the ACK is sent before the
 * message is delivered): its request is unread, so it can go to another worker as if it had just
 * arrived. The owned listener takes it back ({@link rehomeOrphansWith}); without one (balance
 * 'sticky', whose messages carry the PROXY header's peer) it is closed: the client sees a reset, as
 * every other connection of the dead worker does, and never waits.
 */
function closeUnacknowledged (worker: Worker): void {
  const child = worker.process as unknown as {
    _pendingMessage?: { handle?: RawHandle | null } | null
    _handleQueue?: Array<{ handle?: unknown }> | null
  }
  const left: unknown[] = []
  const raw = child._pendingMessage?.handle
  child._pendingMessage = null
  if (raw !== undefined && raw !== null) left.push(raw instanceof Socket ? raw : wrap(raw))
  for (const queued of child._handleQueue ?? []) left.push(queued.handle)
  if (child._handleQueue !== undefined && child._handleQueue !== null) child._handleQueue = []
  for (const orphan of left) {
    if (orphan instanceof Socket && rehome?.(orphan, worker) === true) continue
    try {
      const h = orphan as { destroy?: () => void, close?: () => void } | null | undefined
      if (typeof h?.destroy === 'function') h.destroy()
      else h?.close?.()
    } catch {} // already closed: nothing left to do
  }
}

/** A raw TCP handle (what child_process keeps of a sent socket) as a paused, unread socket again. */
function wrap (handle: RawHandle): Socket | RawHandle {
  try {
    return new Socket({ handle, readable: true, writable: true, pauseOnCreate: true } as ConstructorParameters<typeof Socket>[0])
  } catch {
    return handle // not a stream handle: closed by the caller
  }
}

let rehome: ((socket: Socket, from: Worker) => boolean) | undefined
/**
 * Route the connections a dead worker never acknowledged to `fn` (it returns false to have one
 * closed). One per process: the owned listener's. Returns the function that stops it.
 */
export function rehomeOrphansWith (fn: (socket: Socket, from: Worker) => boolean): () => void {
  rehome = fn
  return () => { if (rehome === fn) rehome = undefined }
}

/** Track the hand-offs of every worker forked from now on; returns the function that stops it. */
export function closeOrphanedHandoffs (): () => void {
  cluster.on('fork', trackHandoffs)
  return () => { cluster.removeListener('fork', trackHandoffs) }
}
