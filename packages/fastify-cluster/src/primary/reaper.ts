import { spawn, type ChildProcess } from 'node:child_process'
import cluster, { type Worker } from 'node:cluster'
import { existsSync, readFileSync } from 'node:fs'

/**
 * The reaper: one tiny `sh` per cluster that kills the workers a SIGKILLed primary leaves behind.
 *
 * A worker notices its primary is gone when its IPC channel closes, drains and exits (worker.ts). A
 * worker whose event loop is blocked never runs that code, so after a kill -9 (or OOM kill) of the
 * primary it lives on, burning a core, until someone kills it; on a bare VM with no service manager
 * nobody does. Nothing inside the worker can help without a thread of its own (about 10 MB per
 * worker), and Linux's parent-death signal needs prctl (native code) or a wrapper (`setpriv
 * --pdeathsig`) that node:cluster's fork cannot put in front of node.
 *
 * So the primary starts `sh` with a pipe on its stdin and writes `+<pid> <start time>` for each
 * worker it forks and `-<pid>` when one exits. When the primary dies, for any reason, the kernel
 * closes the pipe: `read` sees end of file. If no worker is listed (a normal exit: every worker
 * exited first) the reaper exits at once. Otherwise it waits the drain deadline (shutdownTimeout
 * plus the worker's own one-second backstop, plus one second), time enough for a healthy orphan to
 * drain and exit by itself, then SIGKILLs each listed pid that is still the same process: its start
 * time in /proc/<pid>/stat must be the one recorded at fork, so a pid the kernel gave to another
 * process meanwhile is never touched. The same rule as with a live primary: a worker that has not
 * drained by shutdownTimeout is killed.
 *
 * Cost: one dash/bash process, measured about 1 MB RSS (see test/reaper.test.ts), asleep on read().
 * It ignores SIGINT/SIGTERM/SIGHUP (a Ctrl-C to the process group must not take it before the
 * workers it guards), stays in the primary's process group (a kill of the whole group still takes
 * it) and is unref'd: it never keeps the primary alive. Linux only (/proc); where there is no
 * /bin/sh (a distroless image) there is no reaper, and the primary logs that at debug level.
 */
export const REAPER_SCRIPT = `
trap '' INT TERM HUP
grace=$1
pids=' '
while read -r op pid start; do
  case $op in
    +) pids="$pids$pid:$start " ;;
    -) rest=' '; for e in $pids; do [ "\${e%%:*}" = "$pid" ] || rest="$rest$e "; done; pids=$rest ;;
  esac
done
[ "$pids" = ' ' ] && exit 0
sleep "$grace"
for e in $pids; do
  p=\${e%%:*}
  [ -r "/proc/$p/stat" ] || continue
  read -r s < "/proc/$p/stat" || continue
  s=\${s##*) }
  set -- $s
  shift 19
  [ "$1" = "\${e#*:}" ] && kill -9 "$p" 2>/dev/null
done
exit 0
`

/** Field 22 of /proc/<pid>/stat (start time, clock ticks after boot): with the pid, names one process. */
export function startTime (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(') ') + 2).trim().split(/\s+/)[19]
  } catch {
    return undefined
  }
}

export interface Reaper {
  /** The reaper's pid, or undefined when there is none (no /bin/sh, not Linux). */
  pid: number | undefined
  /** Stop following forks and exits, and close the pipe (the reaper exits at once when no worker is listed). */
  stop: () => void
}

export function startReaper (shutdownTimeout: number, onError: (err: Error) => void = () => {}): Reaper {
  const none: Reaper = { pid: undefined, stop: () => {} }
  // PID 1 (node as a container's init): when it dies, the kernel kills every process of its PID
  // namespace, blocked workers included; no reaper needed.
  if (process.platform !== 'linux' || process.pid === 1 || !existsSync('/bin/sh') || !existsSync('/proc/self/stat')) return none
  let child: ChildProcess
  try {
    const grace = ((shutdownTimeout + 2000) / 1000).toFixed(3)
    child = spawn('/bin/sh', ['-c', REAPER_SCRIPT, 'nclust-reaper', grace], {
      stdio: ['pipe', 'ignore', 'ignore'],
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' } // for sleep; none of the app's environment
    })
  } catch (err) {
    onError(err as Error)
    return none
  }
  child.on('error', onError)
  child.unref()
  const stdin = child.stdin
  if (stdin === null) return none
  stdin.on('error', () => {}) // the reaper is gone (killed with the group): nothing left to tell it
  ;(stdin as unknown as { unref?: () => void }).unref?.()
  const write = (line: string): void => { if (!stdin.destroyed) stdin.write(line) }
  const onFork = (worker: Worker): void => {
    const pid = worker.process.pid
    if (pid === undefined) return
    const start = startTime(pid)
    if (start === undefined) return
    write(`+ ${pid} ${start}\n`)
    worker.process.once('exit', () => write(`- ${pid}\n`))
  }
  cluster.on('fork', onFork)
  return {
    pid: child.pid,
    stop: () => {
      cluster.removeListener('fork', onFork)
      stdin.end()
    }
  }
}
