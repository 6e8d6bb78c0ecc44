// The app as a module for nclust.mjs: only workers import it, so the primary stays lean.
import { buildApp as build } from './app.mjs'

export function buildApp () {
  return build()
}
