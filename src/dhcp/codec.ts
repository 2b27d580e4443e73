/**
 * DHCPv4 codec (pure, STYLE.md lesson 1): bytes in, typed packet out, and
 * back. BOOTP header and options per RFC 2131 §2 / RFC 2132, long options
 * per RFC 3396, PXE options per the PXE 2.1 spec and RFC 4578 (93, 94, 97),
 * user class per RFC 3004 (and iPXE's non-conforming plain string), iPXE's
 * encapsulated option 175. No sockets, timers or logging here.
 *
 * Every malformed input raises BootTorrentError('BT_ERR_DHCP_CODEC'); no
 * RangeError escapes, because the server treats a codec error as "log and
 * drop this packet" and anything else as a bug.
 */

import { normalizeMac } from '../util/address.js';
import { isIPv4 } from 'node:net';

import { BootTorrentError } from '../errors.js';
import type { BootArch } from '../boot/policy.js';

/** RFC 2131 §3: the first four octets of the options field. */
export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header before the cookie (RFC 2131 figure 1). */
export const HEADER_SIZE = 236;
/**
 * RFC 1542 §3.1: BOOTP clients may reject messages shorter than 300 octets,
 * and some PXE ROMs inherited that check, so every encoded packet is padded.
 */
export const MIN_PACKET_SIZE = 300;

/** Option 53 values (RFC 2132 §9.6). */
export const MessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

const TYPE_NAMES: Record<number, string> = {
  1: 'DHCPDISCOVER',
  2: 'DHCPOFFER',
  3: 'DHCPREQUEST',
  4: 'DHCPDECLINE',
  5: 'DHCPACK',
  6: 'DHCPNAK',
  7: 'DHCPRELEASE',
  8: 'DHCPINFORM',
};

/** Name of a message type for logs ("DHCPDISCOVER"), or "type N". */
export function messageTypeName(type: number | undefined): string {
  return type === undefined ? 'BOOTP' : (TYPE_NAMES[type] ?? `type ${type}`);
}

/** Option codes used by BootTorrent (RFC 2132 unless noted). */
export const Opt = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  BROADCAST_ADDRESS: 28,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_REQUEST_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER_NAME: 66,
  BOOTFILE_NAME: 67,
  /** RFC 3004; iPXE sends the bare string "iPXE". */
  USER_CLASS: 77,
  /** RFC 3046: added by a relay agent, echoed by the server, removed by the relay. */
  RELAY_AGENT_INFO: 82,
  /** RFC 4578 §2.1: list of u16 architecture types. */
  CLIENT_ARCH: 93,
  /** RFC 4578 §2.2: network interface identifier (type, major, minor). */
  CLIENT_NDI: 94,
  /** RFC 4578 §2.3: machine identifier, type 0 + 16-byte GUID. */
  CLIENT_UUID: 97,
  /** iPXE's encapsulated options (https://ipxe.org/howto/dhcpd). */
  IPXE_ENCAP: 175,
  END: 255,
} as const;

/** Sub-options of option 43 for PXE clients (PXE 2.1 §2.4.5, table 2-1). */
export const PxeSubOpt = {
  MTFTP_IP: 1,
  DISCOVERY_CONTROL: 6,
  BOOT_SERVERS: 8,
  BOOT_MENU: 9,
  MENU_PROMPT: 10,
  BOOT_ITEM: 71,
} as const;

/**
 * PXE_DISCOVERY_CONTROL bits (PXE 2.1 §2.4.5): bit 3 (value 8) means "if a
 * boot file name is present in the DHCP or proxyDHCP offer, download it: no
 * boot server discovery, no menu". Bit 0..2 disable broadcast/multicast
 * discovery and restrict servers.
 */
export const DISCOVERY_CONTROL_USE_BOOTFILE = 8;

/**
 * A decoded DHCP/BOOTP packet. Addresses are dotted quads; `options` holds
 * each option's value (repeated instances already concatenated, RFC 3396),
 * in the order first seen. `sname`/`file` are empty when option 52 said they
 * carried options instead.
 */
export interface DhcpPacket {
  /** 1 BOOTREQUEST, 2 BOOTREPLY. */
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The 16-byte chaddr field; the hardware address is its first `hlen` bytes. */
  chaddr: Buffer;
  sname: string;
  file: string;
  options: Map<number, Buffer>;
}

/** RFC 2131 §2 figure 2: the BROADCAST bit of `flags`. */
export const FLAG_BROADCAST = 0x8000;

function codecError(message: string): BootTorrentError {
  return new BootTorrentError('BT_ERR_DHCP_CODEC', message);
}

function readIp(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Parses a dotted quad into 4 bytes; throws BT_ERR_DHCP_CODEC otherwise. */
export function ipToBytes(ip: string): Buffer {
  if (!isIPv4(ip)) throw codecError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  return Buffer.from(ip.split('.').map(Number));
}

/** A NUL-terminated latin1 field (sname, file). */
function readCString(buf: Buffer): string {
  const nul = buf.indexOf(0);
  return buf.subarray(0, nul === -1 ? buf.length : nul).toString('latin1');
}

/**
 * Parses an option area into `into`, collecting the instances of each code
 * in order (RFC 3396 §7: a split option is the concatenation of its
 * instances). The caller concatenates once per code: concatenating per
 * instance made a 64 KB datagram of 21,000 one-byte instances cost a
 * quadratic 200+ ms of copying, a cheap way to stall the server.
 * `where` names the area for error messages.
 */
function parseOptionArea(area: Buffer, into: Map<number, Buffer[]>, where: string): void {
  let i = 0;
  while (i < area.length) {
    const code = area[i] as number;
    if (code === Opt.PAD) {
      i++;
      continue;
    }
    if (code === Opt.END) return;
    if (i + 1 >= area.length) throw codecError(`option ${code} in ${where} has no length octet`);
    const len = area[i + 1] as number;
    if (i + 2 + len > area.length)
      throw codecError(`option ${code} in ${where} overruns the packet (length ${len})`);
    const value = area.subarray(i + 2, i + 2 + len);
    const list = into.get(code);
    if (list) list.push(value);
    else into.set(code, [value]);
    i += 2 + len;
  }
  // A missing END is tolerated: some BOOTP-era clients stop at the padding.
}

/** One copied buffer per option code, its instances concatenated (copies: the packet buffer is reused). */
function joinOptions(parts: Map<number, Buffer[]>): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (const [code, list] of parts) out.set(code, Buffer.concat(list));
  return out;
}

/** Decodes one DHCP packet (the UDP payload). */
export function decode(buf: Uint8Array): DhcpPacket {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < HEADER_SIZE + 4)
    throw codecError(`packet truncated: ${b.length} bytes, a DHCP packet has at least ${HEADER_SIZE + 4}`);
  const op = b[0] as number;
  if (op !== 1 && op !== 2) throw codecError(`bad op ${op} (1 BOOTREQUEST or 2 BOOTREPLY)`);
  const hlen = b[2] as number;
  if (hlen > 16) throw codecError(`bad hlen ${hlen} (chaddr holds 16 bytes)`);
  const cookie = b.readUInt32BE(HEADER_SIZE);
  if (cookie !== MAGIC_COOKIE)
    throw codecError(`bad magic cookie 0x${cookie.toString(16).padStart(8, '0')} (want 0x63825363)`);

  const snameArea = b.subarray(44, 108);
  const fileArea = b.subarray(108, 236);
  const parts = new Map<number, Buffer[]>();
  parseOptionArea(b.subarray(HEADER_SIZE + 4), parts, 'options');

  // RFC 2132 §9.3: option 52 moves more options into file (1), sname (2) or
  // both (3); RFC 3396 §5 orders them options, file, sname.
  let sname = readCString(snameArea);
  let file = readCString(fileArea);
  const overloadParts = parts.get(Opt.OVERLOAD);
  const overload = overloadParts && Buffer.concat(overloadParts);
  if (overload) {
    const v = overload[0];
    if (overload.length !== 1 || v === undefined || v < 1 || v > 3)
      throw codecError(`bad option overload value ${overload.toString('hex')}`);
    if (v & 1) {
      parseOptionArea(fileArea, parts, 'file field (overload)');
      file = '';
    }
    if (v & 2) {
      parseOptionArea(snameArea, parts, 'sname field (overload)');
      sname = '';
    }
  }

  return {
    op,
    htype: b[1] as number,
    hlen,
    hops: b[3] as number,
    xid: b.readUInt32BE(4),
    secs: b.readUInt16BE(8),
    flags: b.readUInt16BE(10),
    ciaddr: readIp(b, 12),
    yiaddr: readIp(b, 16),
    siaddr: readIp(b, 20),
    giaddr: readIp(b, 24),
    chaddr: Buffer.from(b.subarray(28, 44)),
    sname,
    file,
    options: joinOptions(parts),
  };
}

/** Fields `encode` fills in when left out. */
export type DhcpPacketInit = Partial<DhcpPacket> & { op: number; xid: number; chaddr: Buffer };

/**
 * Encodes a packet: header, cookie, option 53 first (some PXE ROMs look
 * there), the other options in insertion order, values longer than 255
 * split into consecutive instances (RFC 3396), END, then zero padding to
 * 300 bytes. Never uses option overload on output.
 */
export function encode(p: DhcpPacketInit): Buffer {
  const sname = Buffer.from(p.sname ?? '', 'latin1');
  const file = Buffer.from(p.file ?? '', 'latin1');
  if (sname.length > 63) throw codecError(`sname longer than 63 bytes: ${p.sname}`);
  if (file.length > 127) throw codecError(`file longer than 127 bytes: ${p.file}`);
  if (p.chaddr.length > 16) throw codecError('chaddr longer than 16 bytes');

  const head = Buffer.alloc(HEADER_SIZE + 4);
  head[0] = p.op;
  head[1] = p.htype ?? 1;
  head[2] = p.hlen ?? 6; // Ethernet unless told otherwise
  head[3] = p.hops ?? 0;
  head.writeUInt32BE(p.xid >>> 0, 4);
  head.writeUInt16BE(p.secs ?? 0, 8);
  head.writeUInt16BE(p.flags ?? 0, 10);
  ipToBytes(p.ciaddr ?? '0.0.0.0').copy(head, 12);
  ipToBytes(p.yiaddr ?? '0.0.0.0').copy(head, 16);
  ipToBytes(p.siaddr ?? '0.0.0.0').copy(head, 20);
  ipToBytes(p.giaddr ?? '0.0.0.0').copy(head, 24);
  p.chaddr.copy(head, 28);
  sname.copy(head, 44);
  file.copy(head, 108);
  head.writeUInt32BE(MAGIC_COOKIE, HEADER_SIZE);

  const parts: Buffer[] = [head];
  const opts = p.options ?? new Map<number, Buffer>();
  const ordered = [...opts.entries()].sort(
    ([a], [b]) => Number(b === Opt.MESSAGE_TYPE) - Number(a === Opt.MESSAGE_TYPE),
  );
  for (const [code, value] of ordered) {
    if (!Number.isInteger(code) || code <= Opt.PAD || code >= Opt.END)
      throw codecError(`option code ${code} cannot be encoded`);
    if (value.length === 0) {
      parts.push(Buffer.from([code, 0]));
      continue;
    }
    for (let off = 0; off < value.length; off += 255) {
      const chunk = value.subarray(off, off + 255);
      parts.push(Buffer.from([code, chunk.length]), chunk);
    }
  }
  parts.push(Buffer.from([Opt.END]));
  const out = Buffer.concat(parts);
  return out.length >= MIN_PACKET_SIZE
    ? out
    : Buffer.concat([out, Buffer.alloc(MIN_PACKET_SIZE - out.length)]);
}

// ---- option value helpers -------------------------------------------------

/** Hardware address as lower-case "aa:bb:cc:dd:ee:ff" (first hlen bytes). */
export function macOf(p: DhcpPacket): string {
  const n = Math.min(p.hlen || 6, 16);
  return [...p.chaddr.subarray(0, n)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Six bytes of a "aa:bb:..." MAC, padded to the 16-byte chaddr field. */
export function macToChaddr(mac: string): Buffer {
  const norm = normalizeMac(mac);
  if (!norm) throw codecError(`not a MAC address: ${mac}`);
  const out = Buffer.alloc(16);
  Buffer.from(norm.replace(/:/g, ''), 'hex').copy(out);
  return out;
}

/** Option 53, or undefined for a plain BOOTP packet. */
export function messageType(p: DhcpPacket): number | undefined {
  const v = p.options.get(Opt.MESSAGE_TYPE);
  return v && v.length === 1 ? v[0] : undefined;
}

/** An option holding one IPv4 address (50, 54, 1, ...), or undefined when absent or malformed. */
export function optionIp(p: DhcpPacket, code: number): string | undefined {
  const v = p.options.get(code);
  return v && v.length === 4 ? readIp(v, 0) : undefined;
}

/** An option holding a string (60, 12, 66, 67); latin1, trailing NULs dropped. */
export function optionString(p: DhcpPacket, code: number): string | undefined {
  const v = p.options.get(code);
  return v ? v.toString('latin1').replace(/\0+$/, '') : undefined;
}

/** Encodes a list of IPv4 addresses as one option value (3, 6, 54, ...). */
export function ipsValue(ips: readonly string[]): Buffer {
  return Buffer.concat(ips.map(ipToBytes));
}

/** A u32 option value (51, 58, 59). */
export function u32Value(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/**
 * Option 93 (RFC 4578 §2.1): a list of u16 processor architecture types.
 * An odd length is malformed.
 */
export function decodeClientArch(v: Buffer): number[] {
  if (v.length % 2 !== 0) throw codecError(`client architecture option has odd length ${v.length}`);
  const out: number[] = [];
  for (let i = 0; i < v.length; i += 2) out.push(v.readUInt16BE(i));
  return out;
}

export function encodeClientArch(codes: readonly number[]): Buffer {
  const b = Buffer.alloc(codes.length * 2);
  codes.forEach((c, i) => b.writeUInt16BE(c, i * 2));
  return b;
}

/** Option 94 (RFC 4578 §2.2): type 1 = UNDI, with its version (PXE 2.1 = 2.1, 3.16 for UNDI 3.16). */
export interface ClientNdi {
  type: number;
  major: number;
  minor: number;
}

export function decodeClientNdi(v: Buffer): ClientNdi {
  if (v.length !== 3) throw codecError(`client NDI option must be 3 bytes, got ${v.length}`);
  return { type: v[0] as number, major: v[1] as number, minor: v[2] as number };
}

/**
 * Option 97 (RFC 4578 §2.3): type 0 followed by a 16-byte GUID. Returned in
 * the usual text form; the first three fields are little-endian on the
 * wire (SMBIOS order), which is how firmware fills it.
 */
export function decodeClientGuid(v: Buffer): string {
  if (v.length !== 17 || v[0] !== 0)
    throw codecError(`client UUID option must be type 0 + 16 bytes, got ${v.length} bytes`);
  const g = v.subarray(1);
  const hex = (b: Buffer) => b.toString('hex');
  const le = (b: Buffer) => hex(Buffer.from(b).reverse());
  return `${le(g.subarray(0, 4))}-${le(g.subarray(4, 6))}-${le(g.subarray(6, 8))}-${hex(g.subarray(8, 10))}-${hex(g.subarray(10, 16))}`;
}

/**
 * Option 77 (RFC 3004 §4): length-prefixed class names. iPXE sends the bare
 * string "iPXE" instead; a value that does not parse as RFC 3004 exactly is
 * returned as one string, so both forms read naturally.
 */
export function decodeUserClass(v: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    const len = v[i] as number;
    if (len === 0 || i + 1 + len > v.length) return [v.toString('latin1')];
    out.push(v.subarray(i + 1, i + 1 + len).toString('latin1'));
    i += 1 + len;
  }
  return out.length > 0 ? out : [v.toString('latin1')];
}

/** Encodes one RFC 3004 user class list. */
export function encodeUserClass(classes: readonly string[]): Buffer {
  return Buffer.concat(
    classes.map((c) => {
      const s = Buffer.from(c, 'latin1');
      if (s.length === 0 || s.length > 255) throw codecError(`user class of bad length: ${c}`);
      return Buffer.concat([Buffer.from([s.length]), s]);
    }),
  );
}

/**
 * Encapsulated sub-options (43 for PXE, 175 for iPXE): code, length, value,
 * with PAD and END as in the outer options (RFC 2132 §8.4).
 */
export function decodeSubOptions(v: Buffer): Map<number, Buffer> {
  const parts = new Map<number, Buffer[]>();
  parseOptionArea(v, parts, 'encapsulated options');
  return joinOptions(parts);
}

/** Encodes sub-options and terminates them with END (PXE 2.1 §2.4.5 requires END in option 43). */
export function encodeSubOptions(subs: ReadonlyMap<number, Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of subs) {
    if (code <= 0 || code >= 255 || value.length > 255)
      throw codecError(`sub-option ${code} cannot be encoded`);
    parts.push(Buffer.from([code, value.length]), value);
  }
  parts.push(Buffer.from([Opt.END]));
  return Buffer.concat(parts);
}

// ---- client classification -------------------------------------------------

/** The architectures a BootPolicy distinguishes (defined beside the policy, which must not import dhcp/). */
export type { BootArch };

/**
 * IANA "Processor Architecture Types" (RFC 4578 §2.1 and the registry's later
 * additions): 0 x86 BIOS, 6 EFI IA32, 7 EFI BC (x64 in practice), 9 EFI
 * x86-64, 11 ARM 64 UEFI, 16 x64 UEFI HTTP, 19 ARM 64 UEFI HTTP. Others
 * (Itanium, 32-bit ARM, IA32 HTTP, ...) have no loader here: 'unknown'.
 */
export function archFromCode(code: number | undefined): BootArch {
  switch (code) {
    case 0:
      return 'bios';
    case 6:
      return 'uefi-ia32';
    case 7:
    case 9:
      return 'uefi-x64';
    case 11:
      return 'uefi-arm64';
    case 16:
      return 'uefi-x64-http';
    case 19:
      return 'uefi-arm64-http';
    default:
      return 'unknown';
  }
}

/** What a request says about the client's boot firmware. */
export interface ClientInfo {
  mac: string;
  /** From option 93 (first entry), else from the "Arch:NNNNN" in option 60. */
  arch: BootArch;
  archCodes: number[];
  /** True when the request comes from iPXE (user class "iPXE" or option 175). */
  ipxe: boolean;
  /** Vendor class starts with "PXEClient" (PXE 2.1 §2.2). */
  pxe: boolean;
  /** Vendor class starts with "HTTPClient" (UEFI 2.5+ HTTP Boot). */
  httpClient: boolean;
  vendorClass?: string;
  userClass?: string[];
  guid?: string;
  ndi?: ClientNdi;
}

/**
 * Classifies a request. Malformed PXE options throw BT_ERR_DHCP_CODEC like
 * any other decode error; absent ones are simply absent.
 */
export function clientInfo(p: DhcpPacket): ClientInfo {
  const vendorClass = optionString(p, Opt.VENDOR_CLASS);
  const uc = p.options.get(Opt.USER_CLASS);
  const userClass = uc ? decodeUserClass(uc) : undefined;
  const archOpt = p.options.get(Opt.CLIENT_ARCH);
  let archCodes = archOpt ? decodeClientArch(archOpt) : [];
  if (archCodes.length === 0 && vendorClass) {
    // PXE 2.1 §2.2: "PXEClient:Arch:xxxxx:UNDI:yyyzzz"; HTTPClient uses the same layout.
    const m = /^(?:PXEClient|HTTPClient):Arch:(\d{5})/.exec(vendorClass);
    if (m?.[1]) archCodes = [Number(m[1])];
  }
  const guidOpt = p.options.get(Opt.CLIENT_UUID);
  const ndiOpt = p.options.get(Opt.CLIENT_NDI);
  const info: ClientInfo = {
    mac: macOf(p),
    arch: archFromCode(archCodes[0]),
    archCodes,
    ipxe: userClass?.includes('iPXE') === true || p.options.has(Opt.IPXE_ENCAP),
    pxe: vendorClass?.startsWith('PXEClient') === true,
    httpClient: vendorClass?.startsWith('HTTPClient') === true,
  };
  if (vendorClass !== undefined) info.vendorClass = vendorClass;
  if (userClass !== undefined) info.userClass = userClass;
  if (guidOpt) info.guid = decodeClientGuid(guidOpt);
  if (ndiOpt) info.ndi = decodeClientNdi(ndiOpt);
  return info;
}
