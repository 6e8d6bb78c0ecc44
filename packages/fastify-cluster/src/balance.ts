import { readFileSync } from 'node:fs'
import type { Worker } from 'node:cluster'
import type { SendHandle } from 'node:child_process'
import { message, type ListenerMessage } from './messages.js'

/**
 * Kernel balancing (`balance: 'kernel'`): each worker listens with `reusePort: true` (SO_REUSEPORT),
 * so it owns its listening socket and the kernel spreads new connections over the workers by a hash
 * of the 4-tuple. In a cluster worker, Node turns `reusePort: true` into an exclusive listen: the
 * primary never creates, holds or round-robins that handle (lib/net.js: `if (options.reusePort ===
 * true) options.exclusive = true`, and `listenInCluster` then binds in the worker itself).
 *
 * Node 20 and 22 before 22.12 (23 before 23.1) ignore the option silently and would fall back to
 * the primary's round-robin, so it is refused there; so is an OS whose kernel does not balance
 * SO_REUSEPORT listeners (only Linux is supported and tested).
 */

/** 'sticky': see ./primary/sticky.ts (the primary hands each client address to one worker). */
export type Balance = 'primary' | 'kernel' | 'sticky'
export const BALANCE_VALUES: readonly Balance[] = ['primary', 'kernel', 'sticky']

/** Why kernel balancing cannot work here, or undefined when it can. */
export function kernelBalanceUnsupported (version: string = process.version, platform: string = process.platform): string | undefined {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number)
  if (!(major >= 24 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12))) {
    return `kernel balancing needs listen({ reusePort }) from Node 22.12+ or 23.1+, this is Node ${version}`
  }
  if (platform !== 'linux') return `kernel balancing needs Linux (SO_REUSEPORT load balancing), this is ${platform}`
  return undefined
}

/**
 * `net.ipv4.tcp_migrate_req` (Linux 5.14+): when on, a closing listener hands the connections still in
 * its accept queue to another listener of the same port; when off, the kernel resets them. Returns
 * `'on'`, `'off'`, or `'unknown'` (older kernel, no /proc).
 */
export function tcpMigrateReq (root = '/'): 'on' | 'off' | 'unknown' {
  try {
    const v = readFileSync(`${root.replace(/\/$/, '')}/proc/sys/net/ipv4/tcp_migrate_req`, 'utf8').trim()
    return v === '0' ? 'off' : 'on'
  } catch {
    return 'unknown'
  }
}

export const TCP_MIGRATE_WARNING = 'balance kernel: net.ipv4.tcp_migrate_req is 0, so connections still queued on a ' +
  'listening socket when it closes are reset: nclust keeps each slot\'s socket open across reloads and restarts, ' +
  'but a worker that falls back to a socket of its own, and the shutdown, close one; ' +
  'set sysctl net.ipv4.tcp_migrate_req=1 (per network namespace, Linux 5.14+)'

/**
 * Lossless listener hand-over for kernel balancing, without relying on `tcp_migrate_req`.
 *
 * A closing SO_REUSEPORT listener resets the connections still in its accept queue. So a slot keeps
 * ONE listening socket for its whole life: its first worker opens it and gives the primary a copy of
 * the descriptor; every later generation of the slot (reload, restart) asks for it and listens on the
 * same socket. When an old worker closes its server, the socket stays open (the primary and the new
 * worker still hold it): nothing queued is reset, and the reuseport group keeps one socket per slot.
 * The primary never polls these sockets (it holds raw handles and never listens on them), so it stays
 * out of the connection path. After a crash, connections hashed to the slot wait in its queue until
 * the replacement listens. At shutdown the primary closes its copies at once, so each socket closes
 * with its worker's own (as without the hand-over).
 */
interface RawHandle { close: (cb?: () => void) => void }

export interface ListenerKeeper {
  /** A `listener` message from the worker in `slot`, with the IPC handle it carried. */
  onMessage: (slot: number, peer: Worker, msg: ListenerMessage, handle: unknown) => void
  /** A slot removed by a scale-down: its socket must go, or the kernel keeps hashing connections to it. */
  close: (slot: number) => void
  closeAll: () => void
}

export function createListenerKeeper (): ListenerKeeper {
  const sockets = new Map<number, RawHandle>()
  return {
    onMessage (slot, peer, msg, handle) {
      if (msg.want) {
        const socket = sockets.get(slot)
        // the handle goes as a raw TCP handle ('net.Native'): the worker listens on it, we keep our copy
        try { peer.send(message<ListenerMessage>({ type: 'listener', want: false }), socket as SendHandle, () => {}) } catch { /* the worker is gone; its replacement asks again */ }
        return
      }
      if (handle === null || typeof handle !== 'object') return
      sockets.get(slot)?.close()
      sockets.set(slot, handle as RawHandle)
    },
    close (slot) {
      sockets.get(slot)?.close()
      sockets.delete(slot)
    },
    closeAll () {
      for (const socket of sockets.values()) socket.close()
      sockets.clear()
    }
  }
}
