import { clusterDrain } from './plugin.js'

export { clusterDrain }
export { InvalidOptionError, ServerOptionError, DRAIN_DEFAULTS } from './options.js'
export { errors } from './errors.js'
export { minDrainTimeout } from './defaults.js'
export type { DrainOptions, DrainPhase, DrainState } from './types.js'
export default clusterDrain
