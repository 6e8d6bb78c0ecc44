// `pnpm bench`: every benchmark, one after the other (never in parallel: they share 2 cores).
// Each prints its own ratios; see bench/README.md for what they measure.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
let failed = 0
for (const [file, ...args] of [['cluster.mjs'], ['drain.mjs'], ['pidmetrics.mjs'], ['primary-rss.mjs']]) {
  console.log(`\n== bench/${file} ${args.join(' ')}`)
  const r = spawnSync(process.execPath, [`${here}${file}`, ...args], { stdio: 'inherit' })
  if (r.status !== 0) failed++
}
process.exit(failed === 0 ? 0 : 1)
