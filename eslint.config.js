import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['**/dist/**', '**/node_modules/**', '**/coverage/**']
  }),
  {
    rules: {
      // `void promise` marks a deliberately un-awaited promise (signal handlers, timers).
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
