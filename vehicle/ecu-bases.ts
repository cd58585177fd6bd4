/**
 * The installed image of each ECU as a base to build the next one from (chunk reuse, a precomputed delta), and the
 * chunk indexes kept for those images (base-index.ts). One place for a single release's download (download-phase.ts)
 * and a bundle's member downloads (bundle-downloads.ts): each member of a bundle targets an ECU whose installed
 * image is as good a base as the one a single release targets.
 */
import { join } from 'node:path';
import type { AgentContext } from './agent-context.js';
import { BaseIndexStore, type ChunkIndex } from './base-index.js';

/** An installed image to build from, with the index kept for it if any. */
export interface EcuBaseImage {
  readonly path: string;
  readonly sha256: string;
  readonly index?: ChunkIndex;
}

export class EcuBases {
  private readonly indexes: BaseIndexStore;

  constructor(private readonly ctx: AgentContext) {
    this.indexes = new BaseIndexStore(join(ctx.store.dir, 'indexes'));
  }

  /** The installed image of the ECU, with the index kept for it if any, or why there is none. */
  async baseImage(ecu: string): Promise<{ image?: EcuBaseImage; missing?: string }> {
    const installer = this.ctx.options.installers[ecu];
    if (!installer?.baseImage) return { missing: `the ${ecu} installer cannot read its image back` };
    let image: { path: string; sha256: string } | undefined;
    try {
      image = await installer.baseImage();
    } catch (err) {
      return { missing: `the installed image of ${ecu} is unavailable: ${(err as Error).message}` };
    }
    if (!image) return { missing: `no committed installed image of ${ecu}` };
    const index = await this.indexes.load(ecu, image.sha256);
    if (typeof index === 'string') {
      this.ctx.logger.info('no usable chunk index kept for the installed image', { ecu, why: index });
      return { image };
    }
    return { image: { ...image, index } };
  }

  /** Keeps a chunk index; failing to is logged, never fatal (the next download reads the image instead). */
  async keepIndex(
    ecu: string,
    sha256: string | undefined,
    index: ChunkIndex,
    alsoKeep: string[],
  ): Promise<void> {
    if (!sha256 || this.ctx.killed()) return;
    try {
      await this.indexes.keep(ecu, sha256, index, alsoKeep);
    } catch (err) {
      this.ctx.logger.warn('could not keep the chunk index', { ecu, error: (err as Error).message });
    }
  }
}
