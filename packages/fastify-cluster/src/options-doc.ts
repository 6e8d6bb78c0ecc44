import { SETTINGS, defaultText, type Setting } from './options.js'
import { errors } from './errors.js'

/**
 * The README's tables, made from {@link SETTINGS} and the error catalogue: `test/options.test.ts`
 * fails when the README differs, and `node scripts/readme-options.mjs` (after `pnpm build`) writes
 * them between the `<!-- options:... -->` markers. Not imported at run time.
 */
const all = (): Array<Setting<unknown>> => Object.values(SETTINGS as Record<string, Setting<unknown>>)
const cell = (text: string): string => text.replace(/\|/g, '\\|')
const code = (text: string | null | undefined): string => text === null || text === undefined || text === '' ? '' : `\`${text}\``

export function optionTable (): string {
  const rows = all().map((s) => `| ${code(s.option)} | ${code(s.env)} | ${s.flag === undefined ? '' : code(`--${s.flag.name}`)} | ${cell(defaultText(s))} | ${cell(s.doc === undefined ? s.allowed : `${s.allowed}; ${s.doc}`)} |`)
  return ['| option | env | flag | default | allowed |', '|---|---|---|---|---|', ...rows].join('\n')
}

export function flagTable (): string {
  const rows = all().flatMap((s) => s.flag === undefined
    ? []
    : [`| ${code(`${s.flag.short !== undefined ? `-${s.flag.short}, ` : ''}--${s.flag.name} <${s.flag.value}>`)} | ${code(s.env)} | ${cell(defaultText(s))} | ${cell(s.flag.help)} |`])
  return ['| flag | env | default | what |', '|---|---|---|---|', ...rows].join('\n')
}

/** The error catalogue as a README table: code and what it means (the JSDoc of each entry is in errors.ts). */
export function errorCodes (): string[] {
  return Object.keys(errors)
}

/** Replace the text between `<!-- name:start -->` and `<!-- name:end -->`. */
export function replaceSection (readme: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  const a = readme.indexOf(start)
  const b = readme.indexOf(end)
  if (a === -1 || b < a) throw new Error(`README has no ${start} ... ${end} section`)
  return `${readme.slice(0, a + start.length)}\n${body}\n${readme.slice(b)}`
}
