import type { BuildApp, ClusterHandle } from './types.js'

export type * from './types.js'
export type { NclustMessage, WorkerToPrimary, PrimaryToWorker } from './messages.js'
export { onPrimaryRequest, currentWorker } from './worker/channel.js'

/** Placeholder while the supervisor lands. */
export async function startClustered (_buildApp: BuildApp, _options: Record<string, unknown> = {}): Promise<ClusterHandle> {
  throw new Error('not implemented yet')
}
