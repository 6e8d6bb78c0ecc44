// Builds one package (run in its folder): ESM with tsc into dist/, then the same modules as CommonJS
// into dist/cjs/ for `require()`. Usage: node ../../scripts/build-package.mjs
//
// Why a dual build and not `require(esm)` alone: require(esm) needs Node 20.19+/22.12+, returns a
// namespace object (not the plugin function @fastify/* users `require()`), and TypeScript `.cts`
// consumers before TS 5.8 cannot import an ESM-only package. Why this script and not tshy/tsup:
// the ESM output stays exactly what tsc emits at the paths every test, bench and the bin already
// use (dist/*.js), and the CommonJS twin is a per-file esbuild transform of that output (esbuild
// is already in the tree through tsx): no bundling, so the primary's lazy `import()`s stay lazy
// and a CommonJS app loads no more modules than an ESM one.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative } from 'node:path'

const require = createRequire(import.meta.url)
const esbuild = require('esbuild')
const pkgDir = process.cwd()
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
const dist = join(pkgDir, 'dist')
const cjs = join(dist, 'cjs')

rmSync(dist, { recursive: true, force: true })
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: pkgDir })

/** Every file under dir (dist/cjs excluded), relative to dir. */
function files (dir, base = dir) {
  const out = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name)
    if (full === cjs) continue
    if (entry.isDirectory()) out.push(...files(full, base))
    else out.push(relative(base, full))
  }
  return out
}

// Entry points (from `exports`) whose default export is a function, a Fastify plugin: in CommonJS the module *is* the plugin,
// with every named export (and `default`) as a property, the shape of `require('@fastify/cors')`.
const entries = new Set(
  Object.values(pkg.exports ?? {})
    .map((v) => typeof v === 'object' && v !== null ? v.import?.default : undefined)
    .filter((p) => typeof p === 'string')
    .map((p) => relative('dist', p))
)
const PLUGIN_SHAPE = `
// The CommonJS shape of @fastify/* plugins: require() gives the plugin itself, named exports on it.
if (typeof module.exports.default === 'function') {
  const ns = module.exports
  const plugin = ns.default
  for (const key of Object.keys(ns)) if (!(key in plugin)) Object.defineProperty(plugin, key, { enumerable: true, get: () => ns[key] })
  module.exports = plugin
}
`

mkdirSync(cjs, { recursive: true })
writeFileSync(join(cjs, 'package.json'), JSON.stringify({ type: 'commonjs' }, null, 2) + '\n')
for (const file of files(dist)) {
  const from = join(dist, file)
  const to = join(cjs, file)
  if (file.endsWith('.d.ts')) {
    mkdirSync(dirname(to), { recursive: true })
    copyFileSync(from, to) // the same declarations, read as CommonJS by dist/cjs/package.json
  } else if (file.endsWith('.js')) {
    const source = readFileSync(from, 'utf8').replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n')
    const usesMeta = source.includes('import.meta')
    const { code } = esbuild.transformSync(source, {
      format: 'cjs',
      platform: 'node',
      target: 'node20',
      // import.meta.url, for the few modules that locate a sibling file (the hang probe's thread).
      define: usesMeta ? { 'import.meta.url': '__nclust_module_url' } : {},
      banner: usesMeta ? 'const __nclust_module_url = require("node:url").pathToFileURL(__filename).href;' : ''
    })
    mkdirSync(dirname(to), { recursive: true })
    writeFileSync(to, entries.has(file) ? code + PLUGIN_SHAPE : code)
  }
}
