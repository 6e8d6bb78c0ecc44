import cluster from 'node:cluster'
import { watch, type FSWatcher } from 'node:fs'
import type { PrimaryHandle } from './types.js'
import { isWorkerMessage } from './messages.js'

/** Names never worth a reload: dependencies, VCS data, editors' swap and backup files. */
const IGNORED = /(^|[/\\])(node_modules|\.git)([/\\]|$)|(^|[/\\])\.[^/\\]*\.sw[a-p]$|~$|(^|[/\\])\.#/

/**
 * `nclust start --watch`: on a change under `paths`, a debounced rolling reload through the same
 * `handle.reload()` as SIGHUP and `nclust reload`. Unlike `node --watch` or fastify-cli's, the
 * process is not restarted: each worker drains, so nothing in flight is lost, and an edit that does
 * not start leaves the old workers serving; its error is printed once, and the next change tries again.
 * node:fs watch (recursive, Linux since Node 20) rather than chokidar: one primary-side watcher
 * for a development loop does not justify a dependency in the primary.
 */
export function watchAndReload (handle: PrimaryHandle, paths: string[], debounceMs = 300): () => void {
  const log = handle.logger
  let timer: NodeJS.Timeout | undefined
  let running = false
  let again = false
  const changed = new Set<string>()

  async function reload (): Promise<void> {
    if (running) { again = true; return }
    running = true
    const files = [...changed]
    changed.clear()
    log.info({ files }, `watch: ${files.slice(0, 3).join(', ')}${files.length > 3 ? ` and ${files.length - 3} more` : ''} changed: rolling reload`)
    // The new worker's own words, stack included (the primary logs only the message of a candidate's failure).
    const failed: { message?: string, stack?: string } = {}
    const onMessage = (_w: unknown, m: unknown): void => {
      if (isWorkerMessage(m) && m.type === 'fatal' && failed.message === undefined) { failed.message = m.message; failed.stack = m.stack }
    }
    cluster.on('message', onMessage)
    try {
      const r = await handle.reload()
      if (r.ok) log.info({ replaced: r.replaced, ms: r.ms }, `watch: reloaded ${r.replaced} workers in ${r.ms}ms`)
      else if (r.reason !== 'shutting down' && r.reason !== 'shutdown began') {
        const stack = failed.stack?.split('\n').slice(0, 6).join('\n')
        log.error({ reason: r.reason, failedWorkerId: r.failedWorkerId, error: failed.message, stack },
          `watch: the change does not start (${failed.message ?? r.reason ?? 'unknown'}); the old workers keep serving; fix it and save again`)
      }
    } finally {
      cluster.off('message', onMessage)
      running = false
    }
    if (again) { again = false; if (changed.size > 0) void reload() }
  }

  const watchers: FSWatcher[] = paths.map((path) => {
    const w = watch(path, { recursive: true }, (_event, name) => {
      const file = typeof name === 'string' ? name : ''
      if (IGNORED.test(file)) return
      changed.add(file === '' ? path : file)
      clearTimeout(timer)
      timer = setTimeout(() => { void reload() }, debounceMs)
    })
    w.on('error', (err) => log.warn({ err, path }, `watch: ${path} can no longer be watched`))
    return w
  })
  log.info({ paths }, `watch: reloading on changes under ${paths.join(', ')}`)
  const stop = (): void => {
    clearTimeout(timer)
    for (const w of watchers) w.close()
  }
  handle.onClose(stop)
  return stop
}
