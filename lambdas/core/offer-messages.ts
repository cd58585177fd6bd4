/** The offers queue's message bodies (ports.ts OfferMessage), checked before the worker acts on one. */
import * as z from '../../protocol/zod.js';

const id = z.string().check(z.minLength(1), z.maxLength(200));

export const offerMessageSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('pace'), campaignId: id, seq: z.int().check(z.minimum(1)) }),
  z.object({ kind: z.literal('take'), campaignId: id, vin: id, wave: z.int().check(z.minimum(0)) }),
  z.object({ kind: z.literal('reoffer'), campaignId: id, vin: id, revision: z.int().check(z.minimum(1)) }),
]);
