// `pnpm bench`: every benchmark, one after the other (never in parallel: they share 2 cores).
// Each prints its own ratios; see bench/README.md for what they measure. compare.mjs (nclust against
// single, bare node:cluster, PM2 and Watt) writes bench/results/latest.json and the README's tables.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
let failed = 0
const t0 = Date.now()
for (const [file, ...args] of [['compare.mjs'], ['cluster.mjs'], ['drain.mjs'], ['pidmetrics.mjs'], ['primary-rss.mjs'], ['worker-rss.mjs'], ['balance.mjs']]) {
  console.log(`\n== bench/${file} ${args.join(' ')}`)
  const r = spawnSync(process.execPath, [`${here}${file}`, ...args], { stdio: 'inherit' })
  if (r.status !== 0) failed++
}
console.log(`\npnpm bench: ${Math.round((Date.now() - t0) / 1000)} s${failed > 0 ? `, ${failed} benchmark(s) FAILED` : ''}`)
process.exit(failed === 0 ? 0 : 1)
