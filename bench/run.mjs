// `pnpm bench`: every benchmark, one after the other (never in parallel: they share 2 cores).
// Each prints its own tables; see bench/README.md for what they measure. compare.mjs (nclust against
// single, bare node:cluster, PM2 and Watt) writes bench/results/latest.json and bench/README.md's tables.
// The `RATIO<tab>name<tab>value<tab>goal<tab>rounds` lines the benchmarks print are gathered into one
// table at the end: every ratio of the run, with its goal.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
let failed = 0
const rows = []
const t0 = Date.now()
for (const [file, ...args] of [['compare.mjs'], ['cluster.mjs'], ['drain.mjs'], ['pidmetrics.mjs'], ['primary-rss.mjs'], ['worker-rss.mjs'], ['balance.mjs']]) {
  console.log(`\n== bench/${file} ${args.join(' ')}`)
  const child = spawn(process.execPath, [`${here}${file}`, ...args], { stdio: ['inherit', 'pipe', 'inherit'] })
  createInterface({ input: child.stdout }).on('line', (l) => {
    if (l.startsWith('RATIO\t')) rows.push([file, ...l.split('\t').slice(1)])
    else console.log(l)
  })
  const code = await new Promise((resolve) => child.on('close', resolve))
  if (code !== 0) failed++
}
console.log('\n| bench | ratio | value | goal | rounds |\n|---|---|---|---|---|')
for (const [file, name, value, goal, spread] of rows) console.log(`| ${file} | ${name} | ${value} | ${goal ?? ''} | ${spread ?? ''} |`)
console.log(`\npnpm bench: ${Math.round((Date.now() - t0) / 1000)} s${failed > 0 ? `, ${failed} benchmark(s) FAILED` : ''}`)
process.exit(failed === 0 ? 0 : 1)
