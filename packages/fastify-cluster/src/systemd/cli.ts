import { realpathSync, writeFileSync } from 'node:fs'
import { availableParallelism, userInfo } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseCli } from '../cli.js'
import { absolute, renderService, renderSocket, unitNameOk, type UnitInput } from './unit.js'

export const SYSTEMD_HELP = `Usage: nclust systemd [flags] <app module>

Prints a systemd service unit (and a socket unit) that runs the app with \`nclust start\`: Type=notify,
the example's hardening, TimeoutStopSec above the shutdown deadline and the reload bound from the
options. The flags are \`nclust start\`'s, passed on as given, plus:
  --name <unit>          unit name (default: the app folder's name)
  --user <user>          User= (default: the user running this command; none for root)
  --node <path>          the node binary (default: this one, ${process.execPath})
  --watchdog-sec <s>     WatchdogSec= (the primary pings every half of it; default: none)
  --no-socket            no .socket unit: the primary binds the port itself
  --out <dir>            write <name>.service and <name>.socket there instead of printing them
`

/** `nclust systemd ...`: returns the exit code; one line on stderr for a bad flag. */
export async function systemdMain (argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const fail = (line: string): number => { err.write(`nclust systemd: ${line}\n`); return 1 }
  let own
  try {
    own = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: false,
      options: { name: { type: 'string' }, user: { type: 'string' }, node: { type: 'string' }, 'watchdog-sec': { type: 'string' }, 'no-socket': { type: 'boolean' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } }
    })
  } catch (e) { return fail((e as Error).message.split('\n')[0] ?? 'invalid arguments') }
  if (own.values.help === true) { out.write(SYSTEMD_HELP); return 0 }
  // The rest are `nclust start` flags: the same parser says what is wrong with them.
  const mine = new Set(['--name', '--user', '--node', '--watchdog-sec', '--out'])
  const rest: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    const key = a.split('=')[0] ?? ''
    if (mine.has(key)) { if (!a.includes('=')) i++; continue }
    if (a === '--no-socket') continue
    rest.push(a)
  }
  let parsed
  try { parsed = parseCli(['start', ...rest]) } catch (e) { return fail((e as Error).message) }
  if (parsed.kind !== 'start') return fail('missing the app module: nclust systemd ./app.js')
  if (parsed.watch !== undefined) return fail('--watch is for development, not for a unit')
  const { resolveOptions } = await import('../options.js')
  let options
  try {
    // Only the flags count, not this shell's env: the unit's env is its own.
    options = resolveOptions({ env: {} }, parsed.flags)
  } catch (e) { return fail((e as Error).message) }
  const cwd = process.cwd()
  const app = absolute(parsed.module, cwd)
  const name = typeof own.values.name === 'string' ? own.values.name : (app.split('/').slice(-2, -1)[0] ?? 'app').replace(/[^A-Za-z0-9:_.-]/g, '-')
  if (!unitNameOk(name)) return fail(`invalid --name: got ${JSON.stringify(name)}, expected letters, digits, ":", "_", ".", "-"`)
  const wd = own.values['watchdog-sec']
  if (wd !== undefined && (typeof wd !== 'string' || !/^\d+$/.test(wd))) return fail(`invalid --watchdog-sec: got ${JSON.stringify(wd)}, expected whole seconds`)
  const user = typeof own.values.user === 'string' ? own.values.user : userInfo().username
  const flagsGiven = rest.filter((a) => absolute(a, cwd) !== app || a.startsWith('-'))
  const input: UnitInput = {
    name,
    app,
    node: absolute(typeof own.values.node === 'string' ? own.values.node : process.execPath, cwd),
    nclust: realpathSync(process.argv[1] ?? ''),
    workingDirectory: cwd,
    ...(user !== 'root' ? { user } : {}),
    flags: flagsGiven,
    // Unset workers: one per CPU where the unit runs; the bound assumes this machine's count.
    options: { ...options, workers: parsed.flags.workers !== undefined ? options.workers : availableParallelism() },
    watchdogSec: wd === undefined ? 0 : Number(wd),
    socket: own.values['no-socket'] !== true
  }
  const service = renderService(input)
  const socket = input.socket ? renderSocket(input) : undefined
  if (typeof own.values.out === 'string') {
    writeFileSync(join(own.values.out, `${name}.service`), service)
    if (socket !== undefined) writeFileSync(join(own.values.out, `${name}.socket`), socket)
    out.write(`${join(own.values.out, `${name}.service`)}${socket !== undefined ? `\n${join(own.values.out, `${name}.socket`)}` : ''}\n`)
    return 0
  }
  out.write(service)
  if (socket !== undefined) out.write(`\n# ---- ${name}.socket ----\n${socket}`)
  return 0
}
