import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync, unlinkSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'

/**
 * What the hang capture shares: report naming, redaction, the report folder's checks and caps.
 * `hangProbe: 'on-hang'` (default) is the primary's inspector capture (primary/hang-capture.ts);
 * `hangProbe: 'always'` is a small thread in each worker (see `worker/hang-probe.ts`) that the primary's
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

/**
 * Evaluated in a hung worker's paused frame (by the hang-probe thread or the primary's inspector
 * capture): the Node.js diagnostic report as JSON text. Where Node has `process.report.excludeEnv`
 * (22.13+, 23.3+) it is set for this one report, so the environment never leaves the worker; on older
 * Node the values are removed before anything is written (see {@link redactReport}).
 */
export const REPORT_EXPRESSION = `(function nclustHangReport (r) {
  const had = r.excludeEnv
  if (typeof had === 'boolean') r.excludeEnv = true
  try { return JSON.stringify(r.getReport()) } finally { if (typeof had === 'boolean') r.excludeEnv = had }
})(globalThis.process.report)`

/**
 * Keep the variables' names (useful: was DATABASE_URL set?), never their values: in the report and in
 * the sub-report of each worker thread it embeds (`workers[]`: Node reads the process's environment there too).
 */
export function redactReport (report: { environmentVariables?: unknown, workers?: unknown }): void {
  const env = report.environmentVariables
  if (typeof env === 'object' && env !== null) {
    report.environmentVariables = Object.fromEntries(Object.keys(env).map((k) => [k, '[redacted]']))
  } else if (env !== undefined) {
    delete report.environmentVariables
  }
  if (Array.isArray(report.workers)) {
    for (const w of report.workers) if (typeof w === 'object' && w !== null) redactReport(w as { environmentVariables?: unknown })
  }
}

/** The name of a hang report: `report.nclust-hung.<pid>.<ms since epoch>.json`. */
export function hangReportName (pid: number, at: number): string {
  return `report.nclust-hung.${pid}.${at}.json`
}

/**
 * The files nclust writes into a report folder: hang reports and `nclust diagnose` output
 * (`nclust-w<slot>-<pid>-<time>.{report.json,heapsnapshot,cpuprofile}`). Only these are counted and removed.
 */
export const REPORT_FILE = /^(report\.nclust-hung\.\d+\.\d+\.json|nclust-w\d+-\d+-[0-9TZ-]+\.(report\.json|heapsnapshot|cpuprofile))$/

export interface ReportFile { name: string, size: number, mtimeMs: number }
export interface ReportLimits { maxFiles: number, maxBytes: number }

/**
 * Which report files to remove so that at most `maxFiles` files and `maxBytes` bytes remain: the
 * newest are kept, the oldest removed first (by modification time, then name). The newest file is
 * always kept, even alone over `maxBytes` (it is the one just written, the one someone is paged for).
 */
export function reportsToRemove (files: readonly ReportFile[], limits: ReportLimits): string[] {
  const newestFirst = [...files].sort((a, b) => b.mtimeMs - a.mtimeMs || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0))
  const remove: string[] = []
  let count = 0
  let bytes = 0
  for (const f of newestFirst) {
    if (count === 0 || (count < limits.maxFiles && bytes + f.size <= limits.maxBytes)) {
      count += 1
      bytes += f.size
    } else remove.push(f.name)
  }
  return remove
}

/**
 * Apply {@link reportsToRemove} to a folder (nclust's files only; anything else there is left alone).
 * Never throws: a folder that cannot be read is left as it is. Returns the names removed.
 */
export function pruneReports (directory: string, limits: ReportLimits): string[] {
  const files: ReportFile[] = []
  let names: string[]
  try { names = readdirSync(directory) } catch { return [] }
  for (const name of names) {
    if (!REPORT_FILE.test(name)) continue
    try {
      const st = lstatSync(join(directory, name))
      if (st.isFile()) files.push({ name, size: st.size, mtimeMs: st.mtimeMs })
    } catch {}
  }
  const removed: string[] = []
  for (const name of reportsToRemove(files, limits)) {
    try { unlinkSync(join(directory, name)); removed.push(name) } catch {}
  }
  return removed
}
