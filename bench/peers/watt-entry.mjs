// Platformatic Watt (@platformatic/node) entry: Watt calls create() in each worker thread and
// manages listen and close itself.
import { buildApp } from './app.mjs'

export function create () {
  return buildApp()
}
