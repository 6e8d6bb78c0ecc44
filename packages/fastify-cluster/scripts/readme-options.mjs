// Writes the README's option and flag tables from src/options.ts (run `pnpm build` first).
// test/options.test.ts fails when the README and the declarations differ.
import { readFileSync, writeFileSync } from 'node:fs'
import { optionTable, flagTable, replaceSection } from '../dist/options-doc.js'

const file = new URL('../README.md', import.meta.url)
let readme = readFileSync(file, 'utf8')
readme = replaceSection(readme, 'options', optionTable())
readme = replaceSection(readme, 'flags', flagTable())
writeFileSync(file, readme)
