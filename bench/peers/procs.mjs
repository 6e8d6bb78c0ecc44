// What a variant costs the machine, read from /proc: every process of its tree (the root and all
// descendants, a PM2 daemon and its workers, Watt's process with its threads), CPU time (utime +
// stime of every thread, in clock ticks) and RSS.
import { readFileSync, readdirSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim() || 100)
const PAGE = Number(execFileSync('getconf', ['PAGESIZE']).toString().trim() || 4096)

function stat (pid) {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ') // fields from 3 (state) on
    return { pid, ppid: Number(f[1]), cpuUs: (Number(f[11]) + Number(f[12])) * TICK_US, rss: Number(f[21]) * PAGE, state: f[0] }
  } catch { return undefined }
}

/** `root` and every live descendant. */
export function tree (root) {
  const all = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const s = stat(Number(name))
    if (s !== undefined && s.state !== 'Z') all.push(s)
  }
  const out = []
  const want = new Set([root])
  let grew = true
  while (grew) {
    grew = false
    for (const s of all) {
      if (!want.has(s.pid) && want.has(s.ppid)) { want.add(s.pid); grew = true }
    }
  }
  for (const s of all) if (want.has(s.pid)) out.push(s)
  return out
}

/** CPU µs used so far by the whole tree of `root`. */
export function treeCpuUs (root) {
  return tree(root).reduce((sum, s) => sum + s.cpuUs, 0)
}

/** RSS in MB of each process of the tree of `root`, the root first. */
export function treeRss (root) {
  return tree(root).sort((a, b) => (a.pid === root ? -1 : b.pid === root ? 1 : a.pid - b.pid)).map((s) => ({ pid: s.pid, rssMB: Math.round(s.rss / 1048576 * 10) / 10 }))
}

export function alive (pid) {
  const s = stat(pid)
  return s !== undefined && s.state !== 'Z'
}
