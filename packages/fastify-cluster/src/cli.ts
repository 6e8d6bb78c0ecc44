import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { SETTINGS, defaultText, resolveOptions, type FlagValues, type Setting } from './options.js'
import { CONTROL_COMMANDS, CONTROL_HELP } from './control-client.js'

/**
 * `nclust start ./app.js`: a fastify-cli app module (or one exporting `buildApp`) on every core,
 * unchanged. The same file runs in the primary and, re-run by node:cluster with the same argv, in
 * every worker; only workers import the app. The flags are the settings of ./options.ts that
 * declare one; env vars are the same as `startClustered`'s and a flag wins over its env var.
 *
 * node:util's parseArgs rather than a CLI library: six flags do not justify a dependency in a
 * process whose memory we count.
 */
const FLAGS = Object.values(SETTINGS as Record<string, Setting<unknown>>).flatMap((s) => s.flag !== undefined && s.option !== null ? [{ ...s.flag, setting: s, option: s.option }] : [])

export const HELP = `Usage: nclust start [flags] <app module>

Runs a Fastify app module on every core: a primary supervises one worker per CPU, replaces crashed
workers, drains on SIGTERM/SIGINT and reloads one worker at a time on SIGHUP.

The module is what \`fastify start\` takes (export default async function (fastify, opts), with an
optional \`options\` export of server options; routes from @fastify/autoload are fine), or a module
exporting buildApp(ctx) that returns a Fastify instance. Only workers import it.

Flags (each also read from its env var; a flag wins):
${FLAGS.map((f) =>
  `  ${f.short !== undefined ? `-${f.short}, ` : '    '}--${`${f.name} <${f.value}>`.padEnd(26)}${f.help} (env ${f.setting.env ?? '-'}; default ${defaultText(f.setting)})`).join('\n')}
      --watch [paths]             reload (rolling, nothing lost) on a change under paths
                                  (given after the module; default: the module's folder)
  -h, --help                      this text
  -v, --version                   the version of @nclust/fastify-cluster

${CONTROL_HELP}
  nclust systemd [flags] <app module>    print a systemd .service and .socket for the app (nclust systemd --help)

Env only (what each allows: the package README's option table):
${Object.values(SETTINGS as Record<string, Setting<unknown>>).flatMap((s) => s.env !== null && s.flag === undefined ? [s.env] : []).join(', ')}

Examples:
  nclust start ./app.js
  nclust start -w 4 -p 8080 -l warn dist/app.js
  WORKER_COUNT=1 nclust start app.js        # one process, for a container
`

/** Parse argv; returns what to do, or throws an Error whose message is the one line to print. */
export function parseCli (argv: string[]): { kind: 'help' } | { kind: 'version' } | { kind: 'start', module: string, flags: FlagValues, watch?: string[] } {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        ...Object.fromEntries(FLAGS.map((f) => [f.name, f.short !== undefined ? { type: 'string', short: f.short } as const : { type: 'string' } as const])),
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

  // Raw text by option name: resolveOptions parses it once, naming the flag in its errors.
  const flags: FlagValues = {}
  for (const f of FLAGS) {
    const value = (values as Record<string, string | boolean | undefined>)[f.name]
    if (typeof value === 'string') flags[f.option] = value
  }
  // --watch [paths]: the paths after the module; by default the app module's folder.
  const watch = values.watch === true ? (extra.length > 0 ? extra : [dirname(resolve(module))]) : undefined
  return { kind: 'start', module, flags, ...(watch !== undefined ? { watch } : {}) }
}

function describeParseError (err: Error & { code?: string }): string {
  const name = /'([^']+)'/.exec(err.message)?.[1] ?? ''
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${name} (nclust --help lists them)`
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return `flag ${name.replace(/ <value>$/, '')} needs a value (nclust --help)`
  return err.message.split('\n')[0] ?? 'invalid arguments'
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

  // Resolved once for this process, flags and env together; startResolved does not resolve again.
  const { appModuleOf, exitWithOneLine, startResolved } = await import('./start.js')
  let resolved, moduleUrl
  try {
    resolved = resolveOptions({}, command.flags)
    moduleUrl = appModuleOf(command.module)
  } catch (err) {
    return exitWithOneLine(err)
  }
  const missing = command.watch?.find((p) => !existsSync(p))
  if (missing !== undefined) return fail(`--watch: ${missing} does not exist`)
  if (command.watch !== undefined && resolved.workers === 1) return fail('--watch reloads workers one by one: it needs at least 2 (--workers)')
  // `nclust start`: SIGUSR2 upgrades the primary (primary/upgrade.ts), as USR2 does for nginx.
  ;(await import('./primary/sockets.js')).enableUpgradeSignal()
  const handle = await startResolved(command.module, moduleUrl, resolved)
  if (command.watch !== undefined && handle.role === 'primary') (await import('./watch.js')).watchAndReload(handle, command.watch)
}
