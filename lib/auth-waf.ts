/**
 * The API's own WAFv2 web ACL: a rate-based rule on the open login routes. Anyone who knows a VIN can call
 * POST /auth/challenge; challenges no longer displace one another and the backend caps them per VIN, and this rule
 * keeps one source address from spending a VIN's cap (or the stage's shared throttle) on its own.
 */
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';

export interface AuthWafProps {
  /**
   * Requests to /auth/* one source address may make in the evaluation window before it is answered 429. Fleets
   * behind carrier-grade NAT share addresses: a car logs in with two requests about every 15 minutes, so the
   * default lets several hundred cars share one address.
   * @default 1000
   */
  readonly authRateLimit?: number;
  /**
   * Evaluation window of the rate rule, seconds (60, 120, 300 or 600).
   * @default 300
   */
  readonly evaluationWindowSeconds?: 60 | 120 | 300 | 600;
}

/** The gateway's JSON error shape, so a vehicle sees the same {"error":{code,message}} as from the handlers. */
const RATE_LIMITED_BODY = JSON.stringify({
  error: { code: 'rate_limited', message: 'Too many login requests from this address; retry later' },
});

export class AuthWaf extends Construct {
  readonly webAcl: wafv2.CfnWebACL;

  constructor(scope: Construct, id: string, props: AuthWafProps = {}) {
    super(scope, id);
    const limit = props.authRateLimit ?? 1000;
    // WAF's own bounds for a rate-based rule.
    if (!Number.isInteger(limit) || limit < 10 || limit > 2_000_000_000) {
      throw new Error(`AuthWaf: authRateLimit must be an integer from 10 to 2e9, got ${limit}`);
    }
    const visibility = (metricName: string): wafv2.CfnWebACL.VisibilityConfigProperty => ({
      cloudWatchMetricsEnabled: true,
      metricName,
      sampledRequestsEnabled: true,
    });
    this.webAcl = new wafv2.CfnWebACL(this, 'WebAcl', {
      scope: 'REGIONAL',
      description: 'Fleet OTA API - per-address rate limit on the open vehicle login routes /auth/',
      defaultAction: { allow: {} },
      visibilityConfig: visibility('FleetOtaApi'),
      customResponseBodies: {
        rateLimited: { contentType: 'APPLICATION_JSON', content: RATE_LIMITED_BODY },
      },
      rules: [
        {
          name: 'auth-rate-per-ip',
          priority: 0,
          action: { block: { customResponse: { responseCode: 429, customResponseBodyKey: 'rateLimited' } } },
          visibilityConfig: visibility('AuthRatePerIp'),
          statement: {
            rateBasedStatement: {
              aggregateKeyType: 'IP',
              limit,
              evaluationWindowSec: props.evaluationWindowSeconds ?? 300,
              // The path WAF sees carries the stage (/v1/auth/...) or a custom domain's base path: match the
              // segment. No other route has an /auth/ segment (VINs, versions and ids cannot hold a slash).
              scopeDownStatement: {
                byteMatchStatement: {
                  fieldToMatch: { uriPath: {} },
                  positionalConstraint: 'CONTAINS',
                  searchString: '/auth/',
                  textTransformations: [{ priority: 0, type: 'LOWERCASE' }],
                },
              },
            },
          },
        },
      ],
    });
  }
}
