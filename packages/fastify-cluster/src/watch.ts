import cluster from 'node:cluster'
import { readdirSync, statSync, watch, type FSWatcher } from 'node:fs'
import { join, relative } from 'node:path'
import type { PrimaryHandle, WorkerExitEvent } from './types.js'
import { isWorkerMessage } from './messages.js'

/** Names never worth a reload: dependencies, VCS data, editors' swap and backup files. */
const IGNORED = /(^|[/\\])(node_modules|\.git)([/\\]|$)|(^|[/\\])\.[^/\\]*\.sw[a-p]$|~$|(^|[/\\])\.#/
/**
 * Folders below a watched path that are never watched at all (no inotify watch is spent on them):
 * dependencies, VCS data, build output. A path given to --watch is watched even if it has one of
 * these names (`--watch dist` watches dist).
 */
export const IGNORED_DIRS: ReadonlySet<string> = new Set(['node_modules', '.git', 'dist'])

/**
 * Watch `root` (a folder and every folder below it except {@link IGNORED_DIRS}, or one file): one
 * non-recursive fs.watch per folder, so one inotify watch per folder watched. fs.watch's own
 * `recursive` on Linux watches the whole tree, node_modules included (1,203 watches for a
 * 300-package tree), and ignoring the events afterwards does not give the watches back. Folders
 * created later are added when they appear. `onChange` gets the changed path relative to `root`.
 */
export function watchTree (root: string, onChange: (file: string) => void, onError: (err: Error, path: string) => void): () => void {
  const watchers = new Map<string, FSWatcher>()
  const add = (dir: string, isRoot: boolean): void => {
    if (watchers.has(dir)) return
    let isDir: boolean
    try { isDir = statSync(dir).isDirectory() } catch { return } // gone already
    let w: FSWatcher
    try {
      w = watch(dir, (_event, name) => {
        const file = typeof name === 'string' && isDir ? join(dir, name) : dir
        if (isDir && typeof name === 'string' && !IGNORED_DIRS.has(name)) add(file, false) // a new folder: watch it too
        onChange(relative(root, file))
      })
    } catch (err) {
      if (isRoot) onError(err as Error, dir)
      return
    }
    w.on('error', (err) => {
      w.close()
      watchers.delete(dir)
      if (isRoot) onError(err, dir) // a folder below that was removed is simply no longer watched
    })
    watchers.set(dir, w)
    if (!isDir) return
    let entries: Array<{ name: string, isDirectory: () => boolean }> = []
    try { entries = readdirSync(dir, { withFileTypes: true }) } catch {}
    for (const e of entries) if (e.isDirectory() && !IGNORED_DIRS.has(e.name)) add(join(dir, e.name), false)
  }
  add(root, true)
  return () => { for (const w of watchers.values()) w.close(); watchers.clear() }
}

/**
 * `nclust start --watch`: on a change under `paths`, a debounced rolling reload through the same
 * `handle.reload()` as SIGHUP and `nclust reload`. Unlike `node --watch` or fastify-cli's, the
 * process is not restarted: each worker drains, so nothing in flight is lost, and an edit that does
 * not start leaves the old workers serving; its error is printed once, and the next change tries again.
 * node:fs watch (recursive, Linux since Node 20) rather than chokidar: one primary-side watcher
 * for a development loop does not justify a dependency in the primary.
 */
/**
 * Whose error a failed reload reports: the new worker of the failed slot (forked during the reload,
 * so not among the pids `before` it, and not asked to exit), with its own fatal message and stack.
 * Another worker's fatal during the reload (an old worker crashing meanwhile, even first and in the
 * same slot) is not the edit's error. Pure.
 */
export function blameFailedReload (
  failedWorkerId: number | undefined, exits: readonly WorkerExitEvent[],
  fatals: ReadonlyMap<number, { message: string, stack?: string }>, before: ReadonlyMap<number, number>
): { pid?: number, message?: string, stack?: string } {
  const exit = exits.find((e) => e.workerId === failedWorkerId && e.reason !== 'requested' && !before.has(e.pid))
  if (exit === undefined) return {}
  const fatal = fatals.get(exit.pid)
  const message = fatal?.message ?? exit.error
  const stack = fatal?.stack?.split('\n').slice(0, 6).join('\n')
  return { pid: exit.pid, ...(message !== undefined ? { message } : {}), ...(stack !== undefined ? { stack } : {}) }
}

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
    // The new worker's own words, stack included (the primary logs only the message of a candidate's
    // failure). Kept by pid, and chosen by the failed slot's exit: another worker's fatal during the
    // reload (an old worker crashing meanwhile) is not the edit's error.
    const fatals = new Map<number, { message: string, stack?: string }>()
    const exits: WorkerExitEvent[] = []
    const onMessage = (w: { process: { pid?: number } }, m: unknown): void => {
      if (isWorkerMessage(m) && m.type === 'fatal' && w.process.pid !== undefined && !fatals.has(w.process.pid)) {
        fatals.set(w.process.pid, { message: m.message, ...(m.stack !== undefined ? { stack: m.stack } : {}) })
      }
    }
    const onExit = (e: WorkerExitEvent): void => { exits.push(e) }
    const before = new Map(handle.workers().map((w) => [w.pid, w.workerId]))
    cluster.on('message', onMessage)
    handle.events.on('worker-exit', onExit)
    try {
      const r = await handle.reload()
      if (r.ok) log.info({ replaced: r.replaced, ms: r.ms }, `watch: reloaded ${r.replaced} workers in ${r.ms}ms`)
      else if (r.reason !== 'shutting down' && r.reason !== 'shutdown began') {
        const { pid, message, stack } = blameFailedReload(r.failedWorkerId, exits, fatals, before)
        log.error({ reason: r.reason, failedWorkerId: r.failedWorkerId, failedPid: pid, error: message, stack },
          `watch: the change does not start (${message ?? r.reason ?? 'unknown'}); the old workers keep serving; fix it and save again`)
      }
    } finally {
      cluster.off('message', onMessage)
      handle.events.off('worker-exit', onExit)
      running = false
    }
    if (again) { again = false; if (changed.size > 0) void reload() }
  }

  const unwatch = paths.map((path) => watchTree(path, (file) => {
    if (IGNORED.test(file)) return
    changed.add(file === '' ? path : file)
    clearTimeout(timer)
    timer = setTimeout(() => { void reload() }, debounceMs)
  }, (err) => log.warn({ err, path }, `watch: ${path} can no longer be watched`)))
  log.info({ paths }, `watch: reloading on changes under ${paths.join(', ')}`)
  const stop = (): void => {
    clearTimeout(timer)
    for (const u of unwatch) u()
  }
  handle.onClose(stop)
  return stop
}
