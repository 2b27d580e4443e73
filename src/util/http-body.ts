/** Reading HTTP answers that are not trusted yet (agent and satellite). */

/**
 * A response's body, at most `max` bytes: before it is verified it may come
 * from anyone on the network, who could send gigabytes into phase 1's RAM.
 */
export async function readBodyCapped(res: Response, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`${what}: ${declared} bytes, more than the ${max} we read`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  if (!res.body) return Buffer.alloc(0);
  // Leaving the loop early cancels the stream (the connection is dropped).
  for await (const value of res.body as AsyncIterable<Uint8Array>) {
    size += value.byteLength;
    if (size > max) throw new Error(`${what}: more than the ${max} bytes we read`);
    chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }
  return Buffer.concat(chunks, size);
}
