import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { ClusterOptions } from './options.js'
import { CONTROL_COMMANDS, CONTROL_HELP } from './control-client.js'

/**
 * `nclust start ./app.js`: a fastify-cli app module (or one exporting `buildApp`) on every core,
 * unchanged. The same file runs in the primary and, re-run by node:cluster with the same argv, in
 * every worker; only workers import the app. Flags are `startClustered` options; env vars are the
 * same as `startClustered`'s and a flag wins over its env var.
 *
 * node:util's parseArgs rather than a CLI library: five flags do not justify a dependency in a
 * process whose memory we count.
 */
const FLAGS = {
  workers: { type: 'string', short: 'w', option: 'workers', env: 'WORKER_COUNT', help: 'worker processes (1: in-process, no fork)', fallback: 'one per CPU the container may use' },
  port: { type: 'string', short: 'p', option: 'port', env: 'PORT', help: 'port every worker listens on', fallback: '3000' },
  address: { type: 'string', short: 'a', option: 'host', env: 'HOST', help: 'address to listen on', fallback: '0.0.0.0' },
  'log-level': { type: 'string', short: 'l', option: 'logger', env: 'LOG_LEVEL', help: 'fatal, error, warn, info, debug, trace or silent', fallback: 'info' },
  'shutdown-timeout': { type: 'string', option: 'shutdownTimeout', env: 'SHUTDOWN_TIMEOUT', help: 'ms a worker gets to drain before SIGKILL', fallback: '30000' },
  control: { type: 'string', option: 'control', env: 'NCLUST_CONTROL', help: 'control socket path, or false', fallback: 'private per-user folder' }
} as const

type Flag = keyof typeof FLAGS

export const HELP = `Usage: nclust start [flags] <app module>

Runs a Fastify app module on every core: a primary supervises one worker per CPU, replaces crashed
workers, drains on SIGTERM/SIGINT and reloads one worker at a time on SIGHUP.

The module is what \`fastify start\` takes (export default async function (fastify, opts), with an
optional \`options\` export of server options; routes from @fastify/autoload are fine), or a module
exporting buildApp(ctx) that returns a Fastify instance. Only workers import it.

Flags (each also read from its env var; a flag wins):
${Object.entries(FLAGS).map(([name, f]) =>
  `  ${'short' in f ? `-${f.short}, ` : '    '}--${`${name} <value>`.padEnd(26)}${f.help} (env ${f.env}; default ${f.fallback})`).join('\n')}
      --watch [paths]             reload (rolling, nothing lost) on a change under paths
                                  (given after the module; default: the module's folder)
  -h, --help                      this text
  -v, --version                   the version of @nclust/fastify-cluster

${CONTROL_HELP}
  nclust systemd [flags] <app module>    print a systemd .service and .socket for the app (nclust systemd --help)

Env only: NCLUST_LOG_FORMAT=pretty|json (default: pretty on a terminal, JSON otherwise),
and every other variable startClustered reads (see the package README).

Examples:
  nclust start ./app.js
  nclust start -w 4 -p 8080 -l warn dist/app.js
  WORKER_COUNT=1 nclust start app.js        # one process, for a container
`

/** Parse argv; returns what to do, or throws an Error whose message is the one line to print. */
export function parseCli (argv: string[]): { kind: 'help' } | { kind: 'version' } | { kind: 'start', module: string, options: ClusterOptions, watch?: string[] } {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        ...Object.fromEntries(Object.entries(FLAGS).map(([name, f]) => [name, 'short' in f ? { type: f.type, short: f.short } : { type: f.type }])),
        watch: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' }
      }
    })
  } catch (err) {
    throw new Error(describeParseError(err as Error & { code?: string }))
  }
  const { values, positionals } = parsed
  if (values.help === true) return { kind: 'help' }
  if (values.version === true) return { kind: 'version' }
  const [command, module, ...extra] = positionals
  if (command === undefined) throw new Error('missing command: nclust start <app module> (nclust --help)')
  if (command !== 'start') throw new Error(`unknown command "${command}": expected start, ${CONTROL_COMMANDS.join(', ')} (nclust --help)`)
  if (module === undefined) throw new Error('missing the app module: nclust start ./app.js')
  if (extra.length > 0 && values.watch !== true) throw new Error(`unexpected argument "${extra[0] ?? ''}" after the app module (nclust --help)`)

  const options: Record<string, unknown> = {}
  for (const name of Object.keys(FLAGS) as Flag[]) {
    const value = (values as Record<string, string | boolean | undefined>)[name]
    if (typeof value !== 'string') continue
    const flag = FLAGS[name]
    options[flag.option] = flag.option === 'logger' ? loggerFor(value) : flag.option === 'control' && value === 'false' ? false : value
  }
  // --watch [paths]: the paths after the module; by default the app module's folder.
  const watch = values.watch === true ? (extra.length > 0 ? extra : [dirname(resolve(module))]) : undefined
  return { kind: 'start', module, options: options as ClusterOptions, ...(watch !== undefined ? { watch } : {}) }
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
function loggerFor (level: string): ClusterOptions['logger'] {
  if (!LEVELS.includes(level)) throw new Error(`invalid --log-level: got ${JSON.stringify(level)}, expected one of ${LEVELS.join(', ')}`)
  return { level }
}

function describeParseError (err: Error & { code?: string }): string {
  const name = /'([^']+)'/.exec(err.message)?.[1] ?? ''
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${name} (nclust --help lists them)`
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return `flag ${name.replace(/ <value>$/, '')} needs a value (nclust --help)`
  return err.message.split('\n')[0] ?? 'invalid arguments'
}

/** A startClustered validation message names the option; on the command line, name the flag. */
export function nameFlags (message: string): string {
  let out = message
  for (const [name, f] of Object.entries(FLAGS)) out = out.replace(`option "${f.option}"`, `--${name}`)
  return out
}

export function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** The `nclust` command: in the primary and, with the same argv, in every worker. */
export async function runCli (argv: string[]): Promise<void> {
  const fail = (line: string): never => {
    process.stderr.write(`nclust: ${line}\n`)
    process.exit(1)
  }
  if (argv[0] === 'systemd') {
    const { systemdMain } = await import('./systemd/cli.js')
    process.exitCode = await systemdMain(argv.slice(1))
    return
  }
  if ((CONTROL_COMMANDS as readonly string[]).includes(argv[0] ?? '')) {
    const { controlMain } = await import('./control-client.js')
    return await controlMain(argv)
  }
  let parsed: ReturnType<typeof parseCli>
  try {
    parsed = parseCli(argv)
  } catch (err) {
    return fail((err as Error).message)
  }
  if (parsed.kind === 'help') { process.stdout.write(HELP); return }
  if (parsed.kind === 'version') { process.stdout.write(`${version()}\n`); return }
  const command = parsed

  const { resolveOptions } = await import('./options.js')
  const { resolveAppModule } = await import('./app-module.js')
  let workers: number
  try {
    workers = resolveOptions(command.options).workers
    resolveAppModule(command.module)
  } catch (err) {
    const e = err as Error & { code?: string }
    return fail(`${e.code ?? 'Error'}: ${nameFlags(e.message)}`)
  }
  const missing = command.watch?.find((p) => !existsSync(p))
  if (missing !== undefined) return fail(`--watch: ${missing} does not exist`)
  if (command.watch !== undefined && workers === 1) return fail('--watch reloads workers one by one: it needs at least 2 (--workers)')
  // `nclust start`: SIGUSR2 upgrades the primary (primary/upgrade.ts), as USR2 does for nginx.
  ;(await import('./primary/sockets.js')).enableUpgradeSignal()
  const { startClustered } = await import('./index.js')
  const handle = await startClustered(command.module, command.options)
  if (command.watch !== undefined && handle.role === 'primary') (await import('./watch.js')).watchAndReload(handle, command.watch)
}
