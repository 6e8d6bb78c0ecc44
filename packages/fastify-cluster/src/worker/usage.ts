import { performance } from 'node:perf_hooks'

/**
 * CPU and event-loop utilisation since the previous call, for the heartbeat (`nclust status`).
 * Workers load perf_hooks anyway (Fastify does); the primary never imports this file.
 */
export function usageSampler (): () => { cpu: number, elu: number } {
  let cpu = process.cpuUsage()
  let at = process.hrtime.bigint()
  let elu = performance.eventLoopUtilization()
  return () => {
    const nowCpu = process.cpuUsage()
    const nowAt = process.hrtime.bigint()
    const nowElu = performance.eventLoopUtilization()
    const usedUs = (nowCpu.user - cpu.user) + (nowCpu.system - cpu.system)
    const elapsedUs = Number(nowAt - at) / 1000
    const d = performance.eventLoopUtilization(nowElu, elu)
    cpu = nowCpu
    at = nowAt
    elu = nowElu
    return {
      cpu: elapsedUs > 0 ? Math.round(usedUs / elapsedUs * 1000) / 10 : 0,
      elu: Math.round(d.utilization * 1000) / 1000
    }
  }
}
