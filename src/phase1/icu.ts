/**
 * Trimming the ICU data that official Node binaries embed (pure). Node's
 * full-icu build links ICU's common data file (`icudt<N>_dat`, ~33 MB in
 * Node 24: every locale's names, currencies, units, collations, plus legacy
 * charset converters and CJK/Thai break dictionaries) into the binary; it is
 * a quarter of the compressed initramfs. The agent needs none of the
 * locale data, so phase 1 keeps the root and English locales and the
 * locale-independent data (Unicode properties, normalization, time zones,
 * root collation, break rules) and zeroes the rest in place, which xz then
 * stores in almost nothing.
 *
 * The format is ICU's "common data" package (ICU4C source
 * common/ucmndata.h and udata.cpp; format "CmnD" version 1): a DataHeader,
 * then a table of contents `u32 count; {u32 nameOffset; u32 dataOffset}[count]`
 * with offsets relative to the table, names like `icudt78l/coll/de.res`
 * sorted for ICU's binary search, and the items. Items are never moved: the
 * table is rewritten with the kept entries (still sorted) and the bytes of
 * dropped items are zeroed. An item's length is the distance to the next
 * entry, so a kept item now spans the zeroes after it, which ICU's loaders
 * accept (they check a minimum length only).
 */

/** The embedded package: where it starts and its items. */
export interface IcuPackage {
  /** Byte offset of the DataHeader in the searched buffer. */
  readonly offset: number;
  /** Byte offset of the table of contents, from `offset`. */
  readonly tocOffset: number;
  readonly items: readonly IcuItem[];
}

export interface IcuItem {
  /** Full name, e.g. `icudt78l/coll/root.res`. */
  readonly name: string;
  /** Byte offset of the item's data, from the table of contents. */
  readonly dataOffset: number;
  /** Byte offset of the item's name, from the table of contents. */
  readonly nameOffset: number;
}

export interface IcuTrimResult {
  readonly kept: number;
  readonly dropped: number;
  /** Bytes of item data zeroed. */
  readonly zeroed: number;
  /** The ICU data name prefix, e.g. `icudt78l`. */
  readonly prefix: string;
}

const CMND = Buffer.from('CmnD', 'latin1');

/**
 * Finds the embedded little-endian ICU common data package in a binary:
 * a DataHeader (magic 0xda27, UDataInfo for format "CmnD" 1.x, ASCII,
 * 2-byte UChar) whose first entry is named `icudt...`. Undefined if none.
 */
export function findIcuPackage(bin: Uint8Array): IcuPackage | undefined {
  const buf = Buffer.from(bin.buffer, bin.byteOffset, bin.byteLength);
  for (let at = buf.indexOf(CMND); at >= 0; at = buf.indexOf(CMND, at + 1)) {
    const start = at - 12; // DataHeader: headerSize, magic, then UDataInfo up to dataFormat
    if (start < 0 || start + 24 > buf.length) continue;
    const headerSize = buf.readUInt16LE(start);
    const infoSize = buf.readUInt16LE(start + 4);
    if (buf[start + 2] !== 0xda || buf[start + 3] !== 0x27 || infoSize < 20) continue;
    // isBigEndian 0, charsetFamily 0 (ASCII), sizeofUChar 2, formatVersion 1.x
    if (buf[start + 8] !== 0 || buf[start + 9] !== 0 || buf[start + 10] !== 2 || buf[start + 16] !== 1)
      continue;
    const toc = start + headerSize;
    if (headerSize < 24 || toc + 4 > buf.length) continue;
    const count = buf.readUInt32LE(toc);
    if (count === 0 || toc + 4 + 8 * count > buf.length) continue;
    const items: IcuItem[] = [];
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      const nameOffset = buf.readUInt32LE(toc + 4 + 8 * i);
      const dataOffset = buf.readUInt32LE(toc + 8 + 8 * i);
      const nameEnd = buf.indexOf(0, toc + nameOffset);
      const prev = items.at(-1);
      if (nameEnd < 0 || nameEnd - (toc + nameOffset) > 200 || (prev && dataOffset < prev.dataOffset)) {
        ok = false;
        break;
      }
      items.push({ name: buf.toString('latin1', toc + nameOffset, nameEnd), dataOffset, nameOffset });
    }
    if (!ok || !items[0]!.name.startsWith('icudt')) continue;
    return { offset: start, tocOffset: headerSize, items };
  }
  return undefined;
}

/**
 * A locale ID as ICU names its resource bundles: language, optional script,
 * region (two letters or UN M.49 digits) and variants, e.g. `sr_Latn_BA`,
 * `es_419`, `ca_ES_VALENCIA`. Data items (`zoneinfo64`, `supplementalData`,
 * `pool`, `res_index`, `root`) do not match, having no 2-3 letter language.
 */
const LOCALE_ID = /^[a-z]{2,3}(_[A-Z][a-z]{3})?(_([A-Z]{2}|\d{3}))?(_[A-Z0-9]+)*$/;

/** The locales phase 1 keeps: English (ICU's default in the POSIX locale is en_US_POSIX) and root. */
const KEPT_LOCALES = new Set(['en', 'en_001', 'en_US', 'en_US_POSIX']);

/**
 * Whether phase 1 keeps an item (by its name without the `icudt..` prefix).
 * Dropped: other locales' bundles in every tree, the legacy charset
 * converters (`.cnv`; UTF-8/16/32, ASCII and Latin-1 are built into ICU's
 * code), the CJK/Thai/Lao/Khmer/Burmese break dictionaries (`.dict`) and the
 * transliterators (V8 does not use them).
 */
export function keepIcuItem(path: string): boolean {
  const slash = path.lastIndexOf('/');
  const dir = slash < 0 ? '' : path.slice(0, slash);
  const base = path.slice(slash + 1);
  const dot = base.lastIndexOf('.');
  const stem = dot < 0 ? base : base.slice(0, dot);
  const ext = dot < 0 ? '' : base.slice(dot + 1);
  if (ext === 'cnv' || ext === 'dict') return false;
  if (dir === 'translit') return false;
  if (ext === 'res' && LOCALE_ID.test(stem)) return KEPT_LOCALES.has(stem);
  return true;
}

/**
 * Rewrites the package inside `bin` in place: only items for which `keep`
 * (given the name without its `icudt..` prefix) is true stay in the table,
 * the others' bytes and the freed table slots are zeroed. The last item's
 * length is unknown (ICU reads it as -1), so it is kept as it is when dropped
 * from the table but not zeroed.
 */
export function trimIcuPackage(
  bin: Uint8Array,
  pkg: IcuPackage,
  keep: (path: string) => boolean = keepIcuItem,
): IcuTrimResult {
  const buf = Buffer.from(bin.buffer, bin.byteOffset, bin.byteLength);
  const toc = pkg.offset + pkg.tocOffset;
  const prefix = pkg.items[0]!.name.split('/')[0]!;
  const kept: IcuItem[] = [];
  let zeroed = 0;
  pkg.items.forEach((item, i) => {
    const path = item.name.slice(item.name.indexOf('/') + 1);
    if (keep(path)) {
      kept.push(item);
      return;
    }
    const next = pkg.items[i + 1];
    if (next !== undefined) {
      buf.fill(0, toc + item.dataOffset, toc + next.dataOffset);
      zeroed += next.dataOffset - item.dataOffset;
    }
  });
  if (kept.length === 0) throw new Error('ICU data: trimming would drop every item');
  buf.writeUInt32LE(kept.length, toc);
  kept.forEach((item, i) => {
    buf.writeUInt32LE(item.nameOffset, toc + 4 + 8 * i);
    buf.writeUInt32LE(item.dataOffset, toc + 8 + 8 * i);
  });
  buf.fill(0, toc + 4 + 8 * kept.length, toc + 4 + 8 * pkg.items.length);
  return { kept: kept.length, dropped: pkg.items.length - kept.length, zeroed, prefix };
}
