/**
 * The operator audit log on the wire: one entry per operator mutation (and per refused attempt), listed newest
 * first by GET /audit with optional filters. The backend writes these entries, the CLI and the console read them.
 */
import * as z from 'zod';
import { OPERATOR_ROLES } from './roles.js';
import { plainText } from './text.js';

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
  target: z.string().nullable(),
  source_ip: z.string(),
  outcome: z.enum(AUDIT_OUTCOMES),
  status: z.number().int(),
  request_id: z.string(),
});
export type AuditEntry = z.infer<typeof auditEntrySchema>;

export const auditPageSchema = z.object({
  entries: z.array(auditEntrySchema),
  next_token: z.string().nullable(),
});
export type AuditPage = z.infer<typeof auditPageSchema>;

/** GET /audit query filters (besides limit and next_token); each must match exactly. */
export const auditFilterShape = {
  actor: plainText(256).min(1).optional(),
  role: z.enum([...OPERATOR_ROLES, 'iam', 'unknown']).optional(),
  outcome: z.enum(AUDIT_OUTCOMES).optional(),
  target: plainText(128).min(1).optional(),
} as const;
