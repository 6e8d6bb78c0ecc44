import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * The hang probe: a small thread in each worker (see `worker/hang-probe.ts`) that the primary's
 * watchdog asks, over a unix socket, for the JS stack of a worker whose event loop is blocked.
 * Both sides derive the socket path from the worker's pid.
 */
export function probeSocketPath (pid: number): string {
  return join(tmpdir(), `nclust-probe-${pid}.sock`)
}

/** Where reports go: the directory given with `--report-directory`, else the OS temp directory. */
export function reportDirectory (configured: string | undefined): string {
  return configured !== undefined && configured !== '' ? configured : tmpdir()
}

/** The probe's answer, one JSON line. */
export interface ProbeReply {
  /** Path of the Node.js diagnostic report written while the loop was paused, if it could be written. */
  report?: string
  /** Top JS frames of the blocked loop, innermost first (`at fn (file:line:col)`). */
  frames: string[]
  error?: string
}
