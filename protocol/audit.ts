/**
 * The operator audit log on the wire: one entry per operator mutation (and per refused attempt), listed newest
 * first by GET /audit with optional filters. The backend writes these entries, the CLI and the console read them.
 */

import { OPERATOR_ROLES } from './roles.js';
import { plainText } from './text.js';
import * as z from './zod.js';

/** allowed: the function ran and answered 2xx; refused: 401/403 (the caller's role may not); failed: any other. */
export const AUDIT_OUTCOMES = ['allowed', 'refused', 'failed'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

export const auditEntrySchema = z.object({
  event_id: z.string(),
  at: z.string(),
  actor: z.string(),
  role: z.enum([...OPERATOR_ROLES, 'iam', 'unknown']),
  /** The route, e.g. `POST /campaigns/{campaignId}/start`. */
  action: z.string(),
  /** What it acted on (release id, VIN, campaign id), when the request names one. */
  target: z.nullable(z.string()),
  source_ip: z.string(),
  outcome: z.enum(AUDIT_OUTCOMES),
  status: z.int(),
  request_id: z.string(),
});
export type AuditEntry = z.infer<typeof auditEntrySchema>;

export const auditPageSchema = z.object({
  entries: z.array(auditEntrySchema),
  next_token: z.nullable(z.string()),
});
export type AuditPage = z.infer<typeof auditPageSchema>;

/** GET /audit query filters (besides limit and next_token); each must match exactly. */
export const auditFilterShape = {
  actor: z.optional(plainText(256).check(z.minLength(1))),
  role: z.optional(z.enum([...OPERATOR_ROLES, 'iam', 'unknown'])),
  outcome: z.optional(z.enum(AUDIT_OUTCOMES)),
  target: z.optional(plainText(128).check(z.minLength(1))),
} as const;
