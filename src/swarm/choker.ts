/**
 * The choker (STYLE.md lesson 7): which interested peers we upload to.
 * Pure: peers' states in, the set to unchoke out.
 *
 * - `lan`: unchoke every interested peer, up to `maxUnchoked`. On a boot
 *   LAN the peers are our own machines; choking them only slows the swarm.
 *   Beyond the cap, peers that have received least from us go first, so
 *   upload capacity is spread and no client starves. Local peers (on our
 *   subnet, ChokerPeer.local) come before remote ones: on a campus a
 *   router link is the scarce one, and a remote subnet's peers get the
 *   piece from their own neighbours once one of them has it.
 * - `standard`: BEP 3 tit-for-tat. The `regularSlots` interested peers that
 *   give us the best rate (when we leech) or take it fastest (when we seed)
 *   are unchoked, plus one optimistic unchoke that the caller rotates, so
 *   newcomers get a chance to prove themselves.
 */
export type ChokerMode = 'lan' | 'standard';

export interface ChokerPeer {
  readonly id: string;
  readonly interested: boolean;
  /** Bytes/s the peer sends us. */
  readonly downloadRate: number;
  /** Bytes/s we send the peer. */
  readonly uploadRate: number;
  /** Bytes we have sent the peer so far. */
  readonly uploaded: number;
  /**
   * A random key the caller draws once per peer, breaking ties before the
   * id: at the start every peer has received nothing, and with ties broken
   * by connection order every uploader favoured the same few peers.
   */
  readonly tiebreak?: number;
  /** On our own subnet (lan mode ranks these first). */
  readonly local?: boolean;
}

export interface ChokerInput {
  readonly mode: ChokerMode;
  readonly peers: readonly ChokerPeer[];
  /** True when we have every piece (rank by upload rate, not download rate). */
  readonly seeding: boolean;
  readonly maxUnchoked: number;
  /** `standard` only: tit-for-tat slots (default 3; the optimistic one is extra). */
  readonly regularSlots?: number;
  /** `standard` only: the peer chosen for the optimistic slot, if any. */
  readonly optimistic?: string;
}

/**
 * Ties broken by id, in code-unit order: localeCompare went through ICU and
 * was the choker's largest cost (it runs on every change of interest).
 */
const byId = (a: ChokerPeer, b: ChokerPeer): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The ids of the peers to unchoke; everyone else is choked. */
export function chooseUnchoked(input: ChokerInput): Set<string> {
  const interested = input.peers.filter((p) => p.interested);
  const out = new Set<string>();
  if (input.mode === 'lan') {
    const ranked = [...interested].sort(
      (a, b) =>
        Number(b.local ?? false) - Number(a.local ?? false) ||
        a.uploaded - b.uploaded ||
        (a.tiebreak ?? 0) - (b.tiebreak ?? 0) ||
        byId(a, b),
    );
    for (const p of ranked.slice(0, input.maxUnchoked)) out.add(p.id);
    return out;
  }
  const slots = Math.min(input.regularSlots ?? 3, input.maxUnchoked);
  const rate = (p: ChokerPeer) => (input.seeding ? p.uploadRate : p.downloadRate);
  const ranked = [...interested].sort((a, b) => rate(b) - rate(a) || byId(a, b));
  for (const p of ranked.slice(0, slots)) out.add(p.id);
  const opt = input.optimistic;
  if (opt !== undefined && out.size < input.maxUnchoked && interested.some((p) => p.id === opt)) out.add(opt);
  return out;
}

/**
 * The next optimistic unchoke: a random interested peer not already in a
 * regular slot (BEP 3 rotates it every 30 s). `random` is injectable.
 */
export function pickOptimistic(
  peers: readonly ChokerPeer[],
  regular: ReadonlySet<string>,
  random: () => number = Math.random,
): string | undefined {
  const candidates = peers.filter((p) => p.interested && !regular.has(p.id));
  if (candidates.length === 0) return undefined;
  return candidates[Math.floor(random() * candidates.length)]!.id;
}
