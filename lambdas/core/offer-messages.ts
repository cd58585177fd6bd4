/** The offers queue's message bodies (ports.ts OfferMessage), checked before the worker acts on one. */
import { z } from 'zod';

const id = z.string().min(1).max(200);

export const offerMessageSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('pace'), campaignId: id, seq: z.number().int().min(1) }),
  z.object({ kind: z.literal('take'), campaignId: id, vin: id, wave: z.number().int().min(0) }),
  z.object({ kind: z.literal('reoffer'), campaignId: id, vin: id, revision: z.number().int().min(1) }),
]);
