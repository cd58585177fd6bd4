/**
 * The HTTP API in one place: every route, which function serves it, how it is authorised, and the schema of its
 * body. The CDK stack builds API Gateway from ROUTES, the local gateway dispatches with it, handlers validate
 * with it and the OpenAPI document is generated from it, so none of them can drift from the others.
 */

import { auditPageSchema } from './audit.js';
import { signedBundleSchema } from './bundle.js';
import { bundleAnswerSchema, bundleRequestSchema, bundleViewSchema } from './bundle-api.js';
import {
  installedVersionsSchema,
  principalViewSchema,
  vehicleHistorySchema,
  vehicleListSchema,
} from './fleet-view.js';
import { freshnessAlertAnswerSchema, freshnessAnswerSchema } from './freshness.js';
import { inventoryAnswerSchema } from './inventory.js';
import { VIN_LIST_LIMITS } from './limits.js';
import {
  campaignCreatedSchema,
  campaignExcludedSchema,
  campaignListSchema,
  campaignVehiclesSchema,
  campaignViewSchema,
  releaseCreatedSchema,
  releaseListSchema,
  releaseViewSchema,
  releaseWithdrawnSchema,
  vehicleRegisteredSchema,
  vehicleRevokedSchema,
  vehicleViewSchema,
} from './operator-responses.js';
import {
  challengeAnswerSchema,
  downloadAnswerSchema,
  firmwareRedirectSchema,
  statusAnswerSchema,
  tokenAnswerSchema,
  updateListSchema,
} from './responses.js';
import { ANY_ROLE, CAMPAIGN_ROLES, type OperatorRole, RELEASE_ROLES } from './roles.js';
import { bodies, createCampaignSchema, queries } from './route-bodies.js';
import type * as z from './zod.js';

// The request schemas live in route-bodies.ts; they are part of this contract, so they are importable from here too.
export {
  bodies,
  campaignIdSchema,
  createCampaignSchema,
  nextTokenSchema,
  PAGE_LIMITS,
  queries,
} from './route-bodies.js';
export { VIN_LIST_LIMITS };

export type FunctionName = 'auth-api' | 'vehicle-api' | 'operator-api' | 'registry-api';
export type RouteAuth = 'none' | 'vehicle' | 'operator';

export interface RouteDefinition {
  readonly method: 'GET' | 'POST';
  /** API Gateway resource path, with {param} placeholders. */
  readonly resource: string;
  readonly fn: FunctionName;
  /** none: open (rate-limited); vehicle: bearer token checked in the handler; operator: IAM on AWS, local accounts locally. */
  readonly auth: RouteAuth;
  readonly body?: z.ZodMiniType;
  /** Query string parameters the route takes (listings: limit, next_token); others are refused with 400. */
  readonly query?: z.ZodMiniType;
  /**
   * Operator routes: the roles allowed to call it (protocol/roles.ts). The CDK stack grants execute-api:Invoke on
   * the route to exactly these roles' IAM roles, and the local gateway refuses the others with 403.
   */
  readonly roles?: readonly OperatorRole[];
  /** Largest accepted body in bytes; larger ones answer 413. */
  readonly maxBodyBytes: number;
  readonly summary: string;
  /**
   * The success answers: status code -> schema of the JSON body. Refusals share one error body
   * (errorAnswerSchema), documented for every route.
   */
  readonly responses: Readonly<Record<number, z.ZodMiniType>>;
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
    responses: { 200: challengeAnswerSchema },
    summary: 'Get a single-use challenge for a vehicle',
  },
  {
    method: 'POST',
    resource: '/auth/token',
    fn: 'auth-api',
    auth: 'none',
    body: bodies.token,
    maxBodyBytes: SMALL,
    responses: { 200: tokenAnswerSchema },
    summary: 'Exchange a signed challenge for a short-lived vehicle token',
  },
  {
    method: 'GET',
    resource: '/updates/{vin}',
    fn: 'vehicle-api',
    auth: 'vehicle',
    maxBodyBytes: 0,
    responses: { 200: updateListSchema },
    summary: 'List the vehicle updates and which are pending (polling fallback)',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/initiate',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.firmwareRequest,
    maxBodyBytes: SMALL,
    responses: { 200: downloadAnswerSchema },
    summary: 'Start an update to a firmware version; answers a download URL',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/download',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.firmwareRequest,
    maxBodyBytes: SMALL,
    responses: { 200: downloadAnswerSchema },
    summary: 'Get a fresh short-lived download URL for a firmware version',
  },
  {
    method: 'GET',
    resource: '/updates/{vin}/firmware/{version}',
    fn: 'vehicle-api',
    auth: 'vehicle',
    maxBodyBytes: 0,
    responses: { 302: firmwareRedirectSchema },
    summary: 'Redirect (302) to a short-lived download URL',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/status',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.status,
    maxBodyBytes: SMALL,
    responses: { 200: statusAnswerSchema },
    summary: 'Report update status',
  },
  {
    method: 'GET',
    resource: '/updates/{vin}/freshness',
    fn: 'vehicle-api',
    auth: 'vehicle',
    maxBodyBytes: 0,
    responses: { 200: freshnessAnswerSchema },
    summary: "The newest signed freshness statement with this vehicle's leaf and inclusion proof",
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/freshness/alert',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.freshnessAlert,
    maxBodyBytes: SMALL,
    responses: { 202: freshnessAlertAnswerSchema },
    summary: 'Report a withheld offer or a lack of freshness statements',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/inventory',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bodies.inventory,
    maxBodyBytes: SMALL,
    responses: { 200: inventoryAnswerSchema },
    summary: 'Report the software inventory: per ECU its hardware id, version and image SHA-256',
  },
  {
    method: 'POST',
    resource: '/updates/{vin}/bundle',
    fn: 'vehicle-api',
    auth: 'vehicle',
    body: bundleRequestSchema,
    maxBodyBytes: SMALL,
    responses: { 200: bundleAnswerSchema },
    summary:
      'A bundle offered to the vehicle: the signed bundle, member manifests with download URLs, any rollback authorisation',
  },
  {
    method: 'POST',
    resource: '/bundles',
    fn: 'operator-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: signedBundleSchema,
    maxBodyBytes: SMALL,
    responses: { 201: bundleViewSchema },
    summary: 'Store an OEM-signed bundle of published releases (several ECUs installed all or nothing)',
  },
  {
    method: 'GET',
    resource: '/bundles/{bundleId}',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    maxBodyBytes: 0,
    responses: { 200: bundleViewSchema },
    summary: 'Get a bundle',
  },
  {
    method: 'POST',
    resource: '/releases',
    fn: 'operator-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: bodies.createRelease,
    maxBodyBytes: LARGE,
    responses: { 201: releaseCreatedSchema },
    summary: 'Create a release from a signed manifest; answers upload URLs',
  },
  {
    method: 'GET',
    resource: '/releases',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.page,
    maxBodyBytes: 0,
    responses: { 200: releaseListSchema },
    summary: 'List releases, a page at a time (?limit=, ?next_token=); without their manifests',
  },
  {
    method: 'GET',
    resource: '/releases/{releaseId}',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    maxBodyBytes: 0,
    responses: { 200: releaseViewSchema },
    summary: 'Get a release',
  },
  {
    method: 'POST',
    resource: '/releases/{releaseId}/publish',
    fn: 'operator-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: bodies.publishRelease,
    maxBodyBytes: LARGE,
    // 202: verification started (or still running) in the background; 200: already published.
    responses: { 200: releaseViewSchema, 202: releaseViewSchema },
    summary: 'Verify the uploaded image against its manifest and publish it',
  },
  {
    method: 'POST',
    resource: '/releases/{releaseId}/withdraw',
    fn: 'operator-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: bodies.killSwitch,
    maxBodyBytes: SMALL,
    responses: { 200: releaseWithdrawnSchema },
    summary:
      'Kill switch: withdraw a release for good (never offered again, its campaigns cancelled, open updates withdrawn)',
  },
  {
    method: 'POST',
    resource: '/vehicles',
    fn: 'registry-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: bodies.registerVehicle,
    maxBodyBytes: SMALL,
    responses: { 201: vehicleRegisteredSchema },
    summary: 'Register a vehicle from its CSR; answers its device certificate',
  },
  {
    method: 'GET',
    resource: '/vehicles',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.vehicles,
    maxBodyBytes: 0,
    responses: { 200: vehicleListSchema },
    summary:
      'List registered vehicles, one scan page (500) at a time, filtered (?model=, ?version=, ?vin_prefix=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/fleet/versions',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.versions,
    maxBodyBytes: 0,
    responses: { 200: installedVersionsSchema },
    summary:
      'Installed versions of an ECU among the vehicles a release would target, one scan page of one segment at a ' +
      'time (?ecu=, ?hardware_ids=, ?model=, ?below=, ?segment=&segments=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/vehicles/{vin}/history',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.history,
    maxBodyBytes: 0,
    responses: { 200: vehicleHistorySchema },
    summary: "A vehicle's update status history, newest first (?limit=)",
  },
  {
    method: 'GET',
    resource: '/me',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    maxBodyBytes: 0,
    responses: { 200: principalViewSchema },
    summary: 'Who the caller is and which operator role it acts in',
  },
  {
    method: 'GET',
    resource: '/vehicles/{vin}',
    fn: 'registry-api',
    auth: 'operator',
    roles: ANY_ROLE,
    maxBodyBytes: 0,
    responses: { 200: vehicleViewSchema },
    summary: 'Get a vehicle with its update state',
  },
  {
    method: 'POST',
    resource: '/vehicles/{vin}/revoke',
    fn: 'registry-api',
    auth: 'operator',
    roles: RELEASE_ROLES,
    body: bodies.killSwitch,
    maxBodyBytes: SMALL,
    responses: { 200: vehicleRevokedSchema },
    summary:
      'Kill switch: revoke a vehicle (certificate revoked, tokens and messages refused, open updates withdrawn)',
  },
  {
    method: 'POST',
    resource: '/campaigns',
    fn: 'operator-api',
    auth: 'operator',
    roles: CAMPAIGN_ROLES,
    body: createCampaignSchema,
    maxBodyBytes: LARGE,
    // 202: the targets are written in the background (status preparing); GET /campaigns/{id} shows progress.
    responses: { 202: campaignCreatedSchema },
    summary: 'Create a staged campaign for a published release (its targets are prepared in the background)',
  },
  {
    method: 'POST',
    resource: '/campaigns/{campaignId}/targets',
    fn: 'operator-api',
    auth: 'operator',
    roles: CAMPAIGN_ROLES,
    body: bodies.campaignAction,
    maxBodyBytes: SMALL,
    responses: { 202: campaignViewSchema },
    summary:
      'The VIN list is uploaded: check it (400 naming a bad line) and prepare the targets from it in the background',
  },
  {
    method: 'GET',
    resource: '/campaigns',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.page,
    maxBodyBytes: 0,
    responses: { 200: campaignListSchema },
    summary: 'List campaigns, a page at a time (?limit=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    maxBodyBytes: 0,
    responses: { 200: campaignViewSchema },
    summary: 'Campaign status with counts per state and per wave',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}/vehicles',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.wavePage,
    maxBodyBytes: 0,
    responses: { 200: campaignVehiclesSchema },
    summary: 'Per-vehicle states of one wave (?wave=N), a page at a time (?limit=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/campaigns/{campaignId}/excluded',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.page,
    maxBodyBytes: 0,
    responses: { 200: campaignExcludedSchema },
    summary: 'Targets the campaign excluded, with the reason, a page at a time (?limit=, ?next_token=)',
  },
  {
    method: 'GET',
    resource: '/audit',
    fn: 'operator-api',
    auth: 'operator',
    roles: ANY_ROLE,
    query: queries.audit,
    maxBodyBytes: 0,
    responses: { 200: auditPageSchema },
    summary:
      'The audit log of operator mutations and refusals, newest first (?actor=, ?role=, ?outcome=, ?target=, ?limit=, ?next_token=)',
  },
  ...(['start', 'pause', 'resume', 'cancel'] as const).map(
    (action): RouteDefinition => ({
      method: 'POST',
      resource: `/campaigns/{campaignId}/${action}`,
      fn: 'operator-api',
      auth: 'operator',
      roles: CAMPAIGN_ROLES,
      body: bodies.campaignAction,
      maxBodyBytes: SMALL,
      // cancel answers 202 while its offers are withdrawn in the background (cancelling), 200 once cancelled.
      responses:
        action === 'cancel'
          ? { 200: campaignViewSchema, 202: campaignViewSchema }
          : { 200: campaignViewSchema },
      summary: `${action[0]!.toUpperCase()}${action.slice(1)} a campaign`,
    }),
  ),
];

export const FUNCTIONS: readonly FunctionName[] = ['auth-api', 'vehicle-api', 'operator-api', 'registry-api'];
