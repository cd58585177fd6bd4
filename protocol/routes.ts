/**
 * The HTTP API in one place: every route, which function serves it, how it is authorised, and the schema of its
 * body. The CDK stack builds API Gateway from ROUTES, the local gateway dispatches with it, handlers validate
 * with it and the OpenAPI document is generated from it, so none of them can drift from the others.
 */
import * as z from 'zod';
import {
  ecuNameSchema,
  hardwareIdSchema,
  releaseIdSchema,
  signedManifestSchema,
  statusReportSchema,
  versionSchema,
  vinSchema,
} from './schemas.js';

export const bodies = {
  challenge: z.strictObject({ vin: vinSchema }),
  token: z.strictObject({
    vin: vinSchema,
    nonce: z.string().regex(/^[A-Za-z0-9_-]{32,64}$/),
    signature: z
      .string()
      .min(16)
      .max(256)
      .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64'),
  }),
  firmwareRequest: z.strictObject({ firmware_version: versionSchema }),
  status: statusReportSchema,
  createRelease: signedManifestSchema,
  publishRelease: z.strictObject({
    upload_id: z.string().min(1).max(1024).optional(),
    parts: z
      .array(
        z.strictObject({ part_number: z.number().int().min(1).max(10000), etag: z.string().min(1).max(256) }),
      )
      .max(10000)
      .optional(),
  }),
  campaignAction: z.strictObject({}),
  registerVehicle: z.strictObject({
    vin: vinSchema,
    model: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/),
    ecus: z
      .array(z.strictObject({ ecu: ecuNameSchema, hardware_id: hardwareIdSchema, version: versionSchema }))
      .min(1)
      .max(64),
    csr: z.string().min(100).max(8192),
  }),
} as const;

export const campaignIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{2,63}$/, 'must be 3-64 lowercase letters, digits or -');

const createCampaignSchema = z.strictObject({
  campaign_id: campaignIdSchema.optional(),
  name: z.string().min(1).max(128),
  release_id: releaseIdSchema,
  targets: z
    .strictObject({
      vins: z.array(vinSchema).max(10000).optional(),
      filter: z
        .strictObject({
          model: z.string().max(64).optional(),
          hardware_id: z.string().max(64).optional(),
          current_version: versionSchema.optional(),
        })
        .optional(),
    })
    .refine((t) => t.vins !== undefined || t.filter !== undefined, 'targets needs vins and/or filter'),
  policy: z
    .strictObject({
      waves: z.array(z.number().gt(0).max(100)).min(1).max(20).optional(),
      advance_success_percent: z.number().min(0).max(100).optional(),
      soak_seconds: z
        .number()
        .int()
        .min(0)
        .max(30 * 86400)
        .optional(),
      halt_failure_count: z.number().int().min(1).optional(),
      halt_failure_percent: z.number().gt(0).max(100).optional(),
      halt_min_outcomes: z.number().int().min(1).optional(),
      vehicle_timeout_seconds: z
        .number()
        .int()
        .min(1)
        .max(30 * 86400)
        .optional(),
      retry_budget: z.number().int().min(0).max(10).optional(),
      notify_per_second: z.number().int().min(1).max(10000).optional(),
    })
    .optional(),
});

export { createCampaignSchema };

/**
 * Every listing is paginated: `limit` items at most (bounded, so no page nears Lambda's 6 MB response), and an
 * opaque `next_token` from the previous page's answer to continue; a page answers `next_token: null` when it is
 * the last. Tokens are only meaningful to the listing that made them; anything else is refused with 400.
 */
export const PAGE_LIMITS = { default: 100, max: 1000 } as const;
export const nextTokenSchema = z
  .string()
  .min(1)
  .max(2048)
  .regex(/^[A-Za-z0-9_-]+$/, 'must be a token from a previous page');
const pageQuery = {
  limit: z.coerce.number().int().min(1).max(PAGE_LIMITS.max).optional(),
  next_token: nextTokenSchema.optional(),
};
export const queries = {
  page: z.strictObject(pageQuery),
  wavePage: z.strictObject({ ...pageQuery, wave: z.coerce.number().int().min(0).max(19).optional() }),
} as const;

export type FunctionName = 'auth-api' | 'vehicle-api' | 'operator-api';
export type RouteAuth = 'none' | 'vehicle' | 'operator';

export interface RouteDefinition {
  readonly method: 'GET' | 'POST';
  /** API Gateway resource path, with {param} placeholders. */
  readonly resource: string;
  readonly fn: FunctionName;
  /** none: open (rate-limited); vehicle: bearer token checked in the handler; operator: IAM on AWS, admin token locally. */
  readonly auth: RouteAuth;
  readonly body?: z.ZodType;
  /** Query string parameters the route takes (listings: limit, next_token); others are refused with 400. */
  readonly query?: z.ZodType;
  /** Largest accepted body in bytes; larger ones answer 413. */
  readonly maxBodyBytes: number;
  readonly summary: string;
}

const SMALL = 16 * 1024;
const LARGE = 1024 * 1024;

export const ROUTES: readonly RouteDefinition[] = [
  {
    method: 'POST',
    resource: '/auth/challenge',
    fn: 'auth-api',
    auth: 'none',
    body: bodies.challenge,
    maxBodyBytes: SMALL,
    summary: 'Get a single-use challenge for a vehicle',
  },
  {
    method: 'POST',
    resource: '/auth/token',
    fn: 'auth-api',
    auth: 'none',
    body: bodies.token,
    maxBodyBytes: SMALL,
    summary: 'Exchange a signed challenge for a short-lived vehicle token',
  },
  {
    method: 'GET',
    resource: '/updates/{vin}',
    fn: 'vehicle-api',
    auth: 'vehicle',
    maxBodyBytes: 0,
    summary: 'List the vehicle updates and which are pending (polling fallback)',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/initiate',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.firmwareRequest,
    maxBodyBytes: SMALL,
    summary: 'Start an update to a firmware version; answers a download URL',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/download',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.firmwareRequest,
    maxBodyBytes: SMALL,
    summary: 'Get a fresh short-lived download URL for a firmware version',
  },
  {
    method: 'GET',
    resource: '/updates/{vin}/firmware/{version}',
    fn: 'vehicle-api',
    auth: 'vehicle',
    maxBodyBytes: 0,
    summary: 'Redirect (302) to a short-lived download URL',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/status',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.status,
    maxBodyBytes: SMALL,
    summary: 'Report update status',
  },
  {
    method: 'POST',
    resource: '/releases',
    fn: 'operator-api',
    auth: 'operator',
    body: bodies.createRelease,
    maxBodyBytes: LARGE,
    summary: 'Create a release from a signed manifest; answers upload URLs',
  },
  {
    method: 'GET',
    resource: '/releases',
    fn: 'operator-api',
    auth: 'operator',
    query: queries.page,
    maxBodyBytes: 0,
    summary: 'List releases, a page at a time (?limit=, ?next_token=); without their manifests',
  },
  {
    method: 'GET',
    resource: '/releases/{releaseId}',
    fn: 'operator-api',
    auth: 'operator',
    maxBodyBytes: 0,
    summary: 'Get a release',
  },
  {
    method: 'POST',
    resource: '/releases/{releaseId}/publish',
    fn: 'operator-api',
    auth: 'operator',
    body: bodies.publishRelease,
    maxBodyBytes: LARGE,
    summary: 'Verify the uploaded image against its manifest and publish it',
  },
  {
    method: 'POST',
    resource: '/vehicles',
    fn: 'operator-api',
    auth: 'operator',
    body: bodies.registerVehicle,
    maxBodyBytes: SMALL,
    summary: 'Register a vehicle from its CSR; answers its device certificate',
  },
  {
    method: 'GET',
    resource: '/vehicles/{vin}',
    fn: 'operator-api',
    auth: 'operator',
    maxBodyBytes: 0,
    summary: 'Get a vehicle with its update state',
  },
  {
    method: 'POST',
    resource: '/campaigns',
    fn: 'operator-api',
    auth: 'operator',
    body: createCampaignSchema,
    maxBodyBytes: LARGE,
    summary: 'Create a staged campaign for a published release',
  },
  {
    method: 'GET',
    resource: '/campaigns',
    fn: 'operator-api',
    auth: 'operator',
    query: queries.page,
    maxBodyBytes: 0,
    summary: 'List campaigns, a page at a time (?limit=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}',
    fn: 'operator-api',
    auth: 'operator',
    maxBodyBytes: 0,
    summary: 'Campaign status with counts per state and per wave',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}/vehicles',
    fn: 'operator-api',
    auth: 'operator',
    query: queries.wavePage,
    maxBodyBytes: 0,
    summary: 'Per-vehicle states of one wave (?wave=N), a page at a time (?limit=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}/excluded',
    fn: 'operator-api',
    auth: 'operator',
    query: queries.page,
    maxBodyBytes: 0,
    summary: 'Targets the campaign excluded, with the reason, a page at a time (?limit=, ?next_token=)',
  },
  ...(['start', 'pause', 'resume', 'cancel'] as const).map(
    (action): RouteDefinition => ({
      method: 'POST',
      resource: `/campaigns/{campaignId}/${action}`,
      fn: 'operator-api',
      auth: 'operator',
      body: bodies.campaignAction,
      maxBodyBytes: SMALL,
      summary: `${action[0]!.toUpperCase()}${action.slice(1)} a campaign`,
    }),
  ),
];

export const FUNCTIONS: readonly FunctionName[] = ['auth-api', 'vehicle-api', 'operator-api'];
