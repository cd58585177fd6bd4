/**
 * Bounds of the HTTP API that code outside the route table needs. Kept apart from routes.ts so that a function
 * which only needs a number (the VIN list reader in ingest, the campaign tick, the workers) does not load, and
 * build at init, every route's schemas with it.
 */

/** A campaign's uploaded VIN list: one VIN a line (CR LF or LF), at most this many VINs and bytes. */
export const VIN_LIST_LIMITS = { lines: 1_000_000, bytes: 24_000_000 } as const;
