import { chmodSync, lstatSync, mkdirSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'

/**
 * The hang probe: a small thread in each worker (see `worker/hang-probe.ts`) that the primary's
 * watchdog asks, over a unix socket, for the JS stack of a worker whose event loop is blocked.
 * The sockets live in a folder the primary creates with `mkdtemp` (mode 0700, a name nobody can
 * guess or take first) and hands to its workers in {@link PROBE_DIR_ENV}; both sides derive a
 * worker's socket from its pid.
 */
export const PROBE_DIR_ENV = 'NCLUST_PROBE_DIR'

export function probeSocketPath (directory: string, pid: number): string {
  return join(directory, `${pid}.sock`)
}

/** The most the primary reads of a probe's answer (one JSON line: a path and a few frames); more is refused. */
export const PROBE_ANSWER_LIMIT = 64 * 1024

/**
 * The default report folder: private to the user, never the shared temp folder.
 * `$XDG_STATE_HOME/nclust/reports`, else `~/.local/state/nclust/reports` (the XDG default for state).
 */
export function defaultReportDirectory (env: Record<string, string | undefined>): string {
  const state = env.XDG_STATE_HOME
  if (state !== undefined && isAbsolute(state)) return join(state, 'nclust', 'reports')
  let home: string
  try { home = homedir() } catch { home = '' } // a uid with no passwd entry and no HOME (some containers)
  return home !== '' ? join(home, '.local', 'state', 'nclust', 'reports') : join(process.cwd(), '.nclust', 'reports')
}

/**
 * Make sure the report folder exists and only this user can write into it, before a report with the
 * process's secrets in memory (request bodies, tokens in the stack's locals are not written, but file
 * paths, arguments and limits are) goes there. Creates it (and its missing parents) with mode 0700;
 * the default folder is tightened to 0700 if it is looser; any folder owned by another user, or
 * writable by group or others, is refused. Throws an Error naming the folder and why.
 */
export function ensureReportDirectory (directory: string, isDefault: boolean): void {
  mkdirSync(directory, { recursive: true, mode: 0o700 })
  const st = isDefault ? lstatSync(directory) : statSync(directory)
  if (!st.isDirectory()) throw new Error(`report folder ${directory} is not a directory${st.isSymbolicLink() ? ' (a symlink)' : ''}`)
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) throw new Error(`report folder ${directory} belongs to uid ${st.uid}, not to this user (${uid})`)
  if (isDefault && (st.mode & 0o077) !== 0) chmodSync(directory, 0o700)
  else if ((st.mode & 0o022) !== 0) throw new Error(`report folder ${directory} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`)
}

/** The probe's answer, one JSON line. */
export interface ProbeReply {
  /** Path of the Node.js diagnostic report written while the loop was paused, if it could be written. */
  report?: string
  /** Top JS frames of the blocked loop, innermost first (`at fn (file:line:col)`). */
  frames: string[]
  error?: string
}

/** An answer read from the socket, checked: anything else than a {@link ProbeReply} is refused. */
export function parseProbeReply (text: string): ProbeReply | undefined {
  let v: unknown
  try { v = JSON.parse(text) } catch { return undefined }
  if (typeof v !== 'object' || v === null) return undefined
  const { report, frames, error } = v as Record<string, unknown>
  if (!Array.isArray(frames) || !frames.every((f) => typeof f === 'string')) return undefined
  if (report !== undefined && typeof report !== 'string') return undefined
  if (error !== undefined && typeof error !== 'string') return undefined
  return { frames: frames as string[], ...(report !== undefined ? { report } : {}), ...(error !== undefined ? { error } : {}) }
}
