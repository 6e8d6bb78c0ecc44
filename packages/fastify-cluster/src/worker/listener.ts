import { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { isPrimaryMessage, message, type ListenerMessage } from '../messages.js'

/**
 * balance 'kernel', worker side (see `createListenerKeeper` in ../balance.ts): ask the primary for
 * this slot's listening socket. Resolves with the raw handle, or undefined when the slot has none yet
 * (or no answer came within `timeoutMs`): then the worker opens its own and offers it.
 */
export async function slotListener (timeoutMs = 10000): Promise<object | undefined> {
  if (typeof process.send !== 'function') return undefined
  return await new Promise((resolve) => {
    const onMessage = (raw: unknown, handle: unknown): void => {
      if (!isPrimaryMessage(raw) || raw.type !== 'listener') return
      done(handle !== null && typeof handle === 'object' ? handle : undefined)
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    function done (handle: object | undefined): void {
      clearTimeout(timer)
      process.off('message', onMessage)
      resolve(handle)
    }
    process.on('message', onMessage)
    process.send?.(message<ListenerMessage>({ type: 'listener', want: true }), undefined, undefined, () => {})
  })
}

/** Give the primary a copy of the socket this worker just opened, for the slot's next generations. */
export function offerListener (app: FastifyInstance): void {
  const handle = (app.server as unknown as { _handle?: object | null })._handle
  if (handle === null || handle === undefined || typeof process.send !== 'function') return
  // A raw TCP handle travels as 'net.Native': the primary holds the descriptor without listening on it.
  process.send(message<ListenerMessage>({ type: 'listener', want: false }), handle as never, undefined, () => {})
}

/**
 * balance 'sticky', worker side (see ../primary/sticky.ts): the worker does not listen; the primary
 * hands it connections, paused and unread, and the worker's server takes each one as if it had
 * accepted it (the drain follows it through the same 'connection' event).
 */
export function acceptFromPrimary (app: FastifyInstance): void {
  const server = app.server as unknown as { emit: (event: 'connection', socket: Socket) => boolean }
  process.on('message', (raw: unknown, handle: unknown) => {
    if (!isPrimaryMessage(raw) || raw.type !== 'connection' || !(handle instanceof Socket)) return
    server.emit('connection', handle)
    handle.resume()
  })
}
