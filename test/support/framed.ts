/** A compressed release built in memory for unit tests: the object (frames and table) and its unsigned manifest. */
import { Readable } from 'node:stream';
import type { CdcParams } from '../../protocol/cdc.js';
import { loadDictCodec } from '../../protocol/delta.js';
import { writeFramedObject } from '../../protocol/frame-publisher.js';
import { digestStream, type ReleaseManifest } from '../../protocol/manifest.js';
import { loadZstd } from '../../protocol/zstd.js';

export async function framedRelease(
  image: Buffer,
  o: { chunkSize: number; cdc: CdcParams; level?: number; window?: number },
) {
  const parts: Buffer[] = [];
  const result = await writeFramedObject(
    Readable.from([image]),
    {
      chunkSize: o.chunkSize,
      codec: await loadZstd(),
      level: o.level ?? 3,
      cdc: o.cdc,
      ...(o.window ? { window: o.window, dictCodec: await loadDictCodec() } : {}),
    },
    (d) => void parts.push(Buffer.from(d)),
  );
  const object = Buffer.concat(parts);
  const d = await digestStream(Readable.from([image]), o.chunkSize);
  const manifest: ReleaseManifest = {
    schema: 'ota.release-manifest/v1',
    release_id: 'tcu-1.0.1',
    ecu: 'tcu',
    hardware_ids: ['TCU-HW-1'],
    version: '1.0.1',
    size: d.size,
    sha256: d.sha256,
    chunk_size: o.chunkSize,
    chunks: d.chunks,
    created_at: new Date(0).toISOString(),
    compression: result.compression,
  };
  return { object, manifest, result, table: object.subarray(result.compression.table_offset) };
}
