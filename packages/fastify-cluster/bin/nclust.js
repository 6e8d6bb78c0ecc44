#!/usr/bin/env node
// The `nclust` command (see `nclust --help`). A committed file rather than dist/cli.js itself, so
// pnpm/npm can link the bin at install time, before the package is built.
import { runCli } from '../dist/cli.js'

await runCli(process.argv.slice(2))
