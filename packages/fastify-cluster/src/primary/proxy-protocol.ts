import { isIP } from 'node:net'
import { V1ProxyProtocol, V2ProxyProtocol, Command, AddressFamilyType, type IPv4ProxyAddress, type IPv6ProxyAddress } from 'proxy-protocol-js'

/**
 * The PROXY protocol header (v1 text, v2 binary: haproxy.org/download/2.9/doc/proxy-protocol.txt),
 * as nginx `proxy_protocol on`, HAProxy `send-proxy` / `send-proxy-v2` and cloud network load
 * balancers send it first on every connection. The field decoding is proxy-protocol-js's (no
 * dependencies, v1 and v2); what it leaves to its caller is done here: framing (where the header
 * ends in a stream whose first chunk may already carry the request), a bound on the bytes read, and
 * checking what it accepts loosely (v1 addresses are any non-blank text there, v2's length field is
 * not checked against the bytes given).
 */

/** A v1 header is at most 107 bytes with its CRLF (spec, section 2.1). */
export const PROXY_V1_MAX = 107
/**
 * A v2 header: 16 bytes, then the addresses and the TLVs the sender adds (AWS NLB: VPC endpoint id;
 * Azure: link id; a few dozen bytes). The spec allows 65535; more than this is refused, so a peer
 * cannot make the primary buffer more.
 */
export const PROXY_V2_MAX = 16 + 1024

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1')

/** The client the header names; `undefined` address: a LOCAL (v2) or UNKNOWN (v1) header, e.g. a health check from the proxy itself. */
export interface ProxiedPeer { address: string, port: number, family: 'IPv4' | 'IPv6' }

export type Framed =
  | { state: 'more' }
  | { state: 'error', reason: string }
  | { state: 'done', peer: ProxiedPeer | undefined, length: number }

/** Decide from the bytes received so far: a complete header (and its length), more bytes needed, or no valid header. Pure. */
export function frameProxyHeader (buf: Buffer): Framed {
  if (buf.length === 0) return { state: 'more' }
  if (buf[0] === 0x0d) return frameV2(buf)
  if (buf[0] === 0x50) return frameV1(buf)
  return { state: 'error', reason: 'no PROXY protocol header' }
}

function prefixMismatch (buf: Buffer, signature: Buffer): boolean {
  const n = Math.min(buf.length, signature.length)
  return buf.compare(signature, 0, n, 0, n) !== 0
}

function frameV1 (buf: Buffer): Framed {
  if (prefixMismatch(buf, V1_SIGNATURE)) return { state: 'error', reason: 'no PROXY protocol header' }
  const end = buf.subarray(0, PROXY_V1_MAX).indexOf('\r\n', 0, 'latin1')
  if (end < 0) return buf.length >= PROXY_V1_MAX ? { state: 'error', reason: `PROXY v1 header longer than ${PROXY_V1_MAX} bytes` } : { state: 'more' }
  const length = end + 2
  const line = buf.toString('latin1', 0, length)
  if (line.startsWith('PROXY UNKNOWN')) return { state: 'done', peer: undefined, length }
  let parsed: V1ProxyProtocol
  try { parsed = V1ProxyProtocol.parse(line) } catch { return { state: 'error', reason: 'malformed PROXY v1 header' } }
  const family = String(parsed.inetProtocol) === 'TCP6' ? 6 : 4
  const { ipAddress, port } = parsed.source
  if (isIP(ipAddress) !== family || isIP(parsed.destination.ipAddress) !== family || !validPort(port) || !validPort(parsed.destination.port) ||
      parsed.data !== '') {
    return { state: 'error', reason: 'malformed PROXY v1 header' }
  }
  return { state: 'done', peer: { address: family === 6 ? normalizeV6(ipAddress) : ipAddress, port, family: family === 6 ? 'IPv6' : 'IPv4' }, length }
}

function frameV2 (buf: Buffer): Framed {
  if (prefixMismatch(buf, V2_SIGNATURE)) return { state: 'error', reason: 'no PROXY protocol header' }
  if (buf.length < 16) return { state: 'more' }
  const length = 16 + buf.readUInt16BE(14)
  if (length > PROXY_V2_MAX) return { state: 'error', reason: `PROXY v2 header longer than ${PROXY_V2_MAX} bytes` }
  if (buf.length < length) return { state: 'more' }
  const familyType = buf[13]! & 0xf0
  let parsed: V2ProxyProtocol
  try {
    parsed = V2ProxyProtocol.parse(new Uint8Array(buf.subarray(0, length)))
  } catch { return { state: 'error', reason: 'malformed PROXY v2 header' } }
  // LOCAL (the proxy's own health check) and families without an IP: the connection's own address stands.
  if (parsed.command === Command.LOCAL || (familyType !== AddressFamilyType.INET && familyType !== AddressFamilyType.INET6)) {
    return { state: 'done', peer: undefined, length }
  }
  if (familyType === AddressFamilyType.INET) {
    if (length < 16 + 12) return { state: 'error', reason: 'malformed PROXY v2 header' }
    const a = parsed.proxyAddress as IPv4ProxyAddress
    return { state: 'done', peer: { address: a.sourceAddress.address.join('.'), port: a.sourcePort, family: 'IPv4' }, length }
  }
  if (length < 16 + 36) return { state: 'error', reason: 'malformed PROXY v2 header' }
  const a = parsed.proxyAddress as IPv6ProxyAddress
  return { state: 'done', peer: { address: v6FromBytes(a.sourceAddress.address), port: a.sourcePort, family: 'IPv6' }, length }
}

const validPort = (p: number): boolean => Number.isInteger(p) && p >= 0 && p <= 65535

/** 16 bytes to the text Node gives `socket.remoteAddress` (compressed, `::ffff:a.b.c.d` for a mapped IPv4). */
export function v6FromBytes (bytes: ArrayLike<number>): string {
  const b = Array.from(bytes)
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `::ffff:${b.slice(12).join('.')}`
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] ?? 0) << 8) | (b[i + 1] ?? 0))
  // the longest run of two or more zero groups becomes '::' (RFC 5952)
  let best = -1; let bestLen = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) { best = i; bestLen = j - i }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (best < 0) return hex.join(':')
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`
}

/** A v1 text address to the same form. */
function normalizeV6 (text: string): string {
  const groups = expandV6(text)
  if (groups === undefined) return text.toLowerCase()
  const bytes: number[] = []
  for (const g of groups) bytes.push(g >> 8, g & 0xff)
  return v6FromBytes(bytes)
}

function expandV6 (text: string): number[] | undefined {
  let s = text.toLowerCase()
  const tail: number[] = []
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)
  if (v4?.[1] !== undefined) {
    const p = v4[1].split('.').map(Number)
    tail.push(((p[0] ?? 0) << 8) | (p[1] ?? 0), ((p[2] ?? 0) << 8) | (p[3] ?? 0))
    s = s.slice(0, -v4[1].length) + '0'
    s = s.replace(/:0$/, '')
  }
  const [head = '', rest] = s.split('::')
  const parse = (part: string): number[] => part === '' ? [] : part.split(':').map((h) => parseInt(h, 16))
  const left = parse(head)
  const right = rest === undefined ? [] : parse(rest)
  const fill = 8 - tail.length - left.length - right.length
  if (fill < 0 || (rest === undefined && fill !== 0)) return undefined
  return [...left, ...Array<number>(fill).fill(0), ...right, ...tail]
}
