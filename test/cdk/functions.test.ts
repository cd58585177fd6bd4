import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { FUNCTION_SETTINGS } from '../../lambdas/core/functions.js';
import { OtaFunction } from '../../lib/ota-function.js';
import { FUNCTIONS } from '../../protocol/routes.js';
import {
  ALL_FUNCTIONS,
  functionEnv,
  functionId,
  functionProps,
  functionRoleId,
  functionStatements,
  newStack,
  otaTemplate,
  resources,
} from './fixtures.js';

const template = otaTemplate();

/** The newest Node.js runtime this aws-cdk-lib knows, computed independently of the construct. */
function newestNodeRuntime(): string {
  return lambda.Runtime.ALL.map((r) => r.name)
    .filter((n) => /^nodejs\d+\.x$/.test(n))
    .sort((a, b) => Number.parseInt(a.slice(6), 10) - Number.parseInt(b.slice(6), 10))
    .at(-1)!;
}

describe('backend functions', { timeout: 300_000 }, () => {
  it('creates one function per FUNCTIONS entry, the ingest and campaign tick functions, and the endpoint lookup provider', () => {
    const all = template.findResources('AWS::Lambda::Function');
    const backend = Object.values(all).filter((f) =>
      String(f.Properties.Description).startsWith('Fleet OTA '),
    );
    assert.deepEqual(
      backend.map((f) => f.Properties.Description).sort(),
      ALL_FUNCTIONS.map((f) => `Fleet OTA ${f}`).sort(),
    );
    // The one other function is the provider of the deploy-time IoT endpoint lookup (FleetIdentity).
    assert.equal(Object.keys(all).length, ALL_FUNCTIONS.length + 1);
  });

  for (const fn of ALL_FUNCTIONS) {
    describe(fn, () => {
      const props = functionProps(template, fn);

      it('runs on arm64 with the newest Node.js runtime', () => {
        assert.deepEqual(props.Architectures, ['arm64']);
        assert.equal(props.Runtime, newestNodeRuntime());
        assert.equal(props.Runtime, 'nodejs24.x');
      });

      it('traces actively with X-Ray', () => {
        assert.deepEqual(props.TracingConfig, { Mode: 'Active' });
      });

      it('logs to its own retained log group with a retention period', () => {
        const logGroupId = (props.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
        const group = resources(template)[logGroupId]!;
        assert.equal(group.Type, 'AWS::Logs::LogGroup');
        assert.equal(group.Properties!.RetentionInDays, 90);
        assert.equal(group.DeletionPolicy, 'Retain');
        const others = ALL_FUNCTIONS.filter((f) => f !== fn).map(
          (f) => (functionProps(template, f).LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref,
        );
        assert.ok(!others.includes(logGroupId), 'not shared');
      });

      it('may write only to its own log group (no AWSLambdaBasicExecutionRole)', () => {
        const role = resources(template)[functionRoleId(template, fn)]!;
        assert.equal(role.Properties!.ManagedPolicyArns, undefined);
        const logStatements = functionStatements(template, fn).filter((s) =>
          s.actions.some((a) => a.startsWith('logs:')),
        );
        const logGroupId = (props.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
        assert.deepEqual(logStatements, [
          {
            Effect: 'Allow',
            actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
            resources: [{ 'Fn::GetAtt': [logGroupId, 'Arn'] }],
            Condition: undefined,
          },
        ]);
      });

      it('enables source maps and configures Powertools', () => {
        const env = functionEnv(template, fn);
        assert.equal(env.NODE_OPTIONS, '--enable-source-maps');
        assert.equal(env.POWERTOOLS_SERVICE_NAME, fn);
        assert.equal(env.POWERTOOLS_METRICS_NAMESPACE, 'FleetOta');
      });

      if (fn === 'ingest') {
        it('gets only its three tables', () => {
          const env = functionEnv(template, fn);
          assert.deepEqual(Object.keys(env).sort(), [
            'NODE_OPTIONS',
            'POWERTOOLS_METRICS_NAMESPACE',
            'POWERTOOLS_SERVICE_NAME',
            'TABLE_COUNTERS',
            'TABLE_UPDATES',
            'TABLE_VEHICLES',
          ]);
        });
      } else if (fn === 'campaign-tick') {
        it('gets the tick and freshness periods, its five tables, the signing key and the offers queue only', () => {
          const env = functionEnv(template, fn);
          assert.deepEqual(Object.keys(env).sort(), [
            'CAMPAIGN_TICK_SECONDS',
            'FRESHNESS_PERIOD_SECONDS',
            'NODE_OPTIONS',
            'OFFER_QUEUE_URL',
            'POWERTOOLS_METRICS_NAMESPACE',
            'POWERTOOLS_SERVICE_NAME',
            'SIGNING_KEY_ARN',
            'TABLE_CAMPAIGNS',
            'TABLE_COUNTERS',
            'TABLE_FRESHNESS',
            'TABLE_UPDATES',
            'TABLE_VEHICLES',
          ]);
          assert.equal(env.CAMPAIGN_TICK_SECONDS, '60');
        });
      } else if (fn === 'jobs-worker') {
        it('gets the queue it continues on, its six tables and the bucket only', () => {
          const env = functionEnv(template, fn);
          assert.deepEqual(Object.keys(env).sort(), [
            'FIRMWARE_BUCKET',
            'JOB_QUEUE_URL',
            'NODE_OPTIONS',
            'POWERTOOLS_METRICS_NAMESPACE',
            'POWERTOOLS_SERVICE_NAME',
            'TABLE_CAMPAIGNS',
            'TABLE_COUNTERS',
            // Campaign preparation writes the exclusions.
            'TABLE_EXCLUSIONS',
            'TABLE_RELEASES',
            'TABLE_UPDATES',
            'TABLE_VEHICLES',
          ]);
        });
      } else if (fn === 'offer-worker') {
        it('gets its queue, its five tables, the signing key and the IoT endpoint only', () => {
          const env = functionEnv(template, fn);
          assert.deepEqual(Object.keys(env).sort(), [
            'AWS_ENDPOINT_URL_IOT_DATA_PLANE',
            'NODE_OPTIONS',
            'OFFER_QUEUE_URL',
            'POWERTOOLS_METRICS_NAMESPACE',
            'POWERTOOLS_SERVICE_NAME',
            'SIGNING_KEY_ARN',
            'TABLE_CAMPAIGNS',
            'TABLE_COUNTERS',
            'TABLE_RELEASES',
            'TABLE_UPDATES',
            'TABLE_VEHICLES',
          ]);
        });
      } else if (fn === 'audit-refusals') {
        it('gets the audit table only', () => {
          const env = functionEnv(template, fn);
          assert.deepEqual(Object.keys(env).sort(), [
            'NODE_OPTIONS',
            'POWERTOOLS_METRICS_NAMESPACE',
            'POWERTOOLS_SERVICE_NAME',
            'TABLE_AUDIT',
          ]);
        });
      } else {
        it('gets the shared settings with their defaults', () => {
          const env = functionEnv(template, fn);
          assert.equal(env.RELEASE_PUBLIC_KEYS, '[]');
          assert.equal(env.PRESIGN_TTL_SECONDS, '300');
          assert.equal(env.TOKEN_TTL_SECONDS, '3600');
        });
      }

      if (fn === 'campaign-tick') {
        it('times out within its 60 s period, with no reserved concurrency by default', () => {
          assert.equal(props.MemorySize, 512);
          assert.equal(props.Timeout, 55);
          assert.equal(props.ReservedConcurrentExecutions, undefined);
        });
      } else if (fn === 'jobs-worker') {
        it('has a full vCPU, the 15-minute Lambda maximum, and no reserved concurrency', () => {
          assert.equal(props.MemorySize, 1769);
          assert.equal(props.Timeout, 900);
          assert.equal(props.ReservedConcurrentExecutions, undefined);
        });
      } else if (fn === 'offer-worker') {
        it('has a minute per batch (one pacer page or ten offers) and no reserved concurrency', () => {
          assert.equal(props.MemorySize, 512);
          assert.equal(props.Timeout, 60);
          assert.equal(props.ReservedConcurrentExecutions, undefined);
        });
      } else if (fn === 'audit-refusals') {
        it('is small and short: a batch of access log lines, a few PutItems', () => {
          assert.equal(props.MemorySize, 256);
          assert.equal(props.Timeout, 30);
          assert.equal(props.ReservedConcurrentExecutions, undefined);
        });
      } else {
        it('has a memory size and a timeout below the API Gateway limit, and no reserved concurrency by default', () => {
          assert.equal(props.MemorySize, 512);
          assert.equal(props.Timeout, 10);
          assert.equal(props.ReservedConcurrentExecutions, undefined);
        });
      }
    });
  }

  it('configures each function with the timeout and memory of FUNCTION_SETTINGS, which the local cloud enforces', () => {
    assert.deepEqual(Object.keys(FUNCTION_SETTINGS).sort(), [...ALL_FUNCTIONS].sort());
    for (const fn of ALL_FUNCTIONS) {
      const props = functionProps(template, fn);
      assert.equal(props.Timeout, FUNCTION_SETTINGS[fn].timeoutSeconds, fn);
      assert.equal(props.MemorySize, FUNCTION_SETTINGS[fn].memoryMb, fn);
    }
  });

  it('reserves no concurrency by default, so it deploys on an account whose concurrency quota is 10', () => {
    // AWS keeps at least 10 of the account's concurrency unreserved: with a quota of 10, any reservation fails.
    for (const f of Object.values(template.findResources('AWS::Lambda::Function'))) {
      assert.equal(f.Properties.ReservedConcurrentExecutions, undefined, String(f.Properties.Description));
    }
    const t = otaTemplate({ campaignTickReservedConcurrency: 1 });
    assert.equal(functionProps(t, 'campaign-tick').ReservedConcurrentExecutions, 1, 'opt-in');
    for (const fn of ALL_FUNCTIONS.filter((f) => f !== 'campaign-tick')) {
      assert.equal(functionProps(t, fn).ReservedConcurrentExecutions, undefined, fn);
    }
  });

  it('passes the stack settings through', () => {
    const t = otaTemplate({
      presignTtlSeconds: 120,
      tokenTtlSeconds: 600,
      reservedConcurrentExecutions: 5,
      ingestMaxConcurrency: 7,
      functionLogRetention: logs.RetentionDays.ONE_MONTH,
    });
    for (const fn of FUNCTIONS) {
      const env = functionEnv(t, fn);
      assert.equal(env.PRESIGN_TTL_SECONDS, '120');
      assert.equal(env.TOKEN_TTL_SECONDS, '600');
      assert.equal(functionProps(t, fn).ReservedConcurrentExecutions, 5);
    }
    assert.equal(functionProps(t, 'ingest').ReservedConcurrentExecutions, undefined);
    const [mapping] = Object.values(t.findResources('AWS::Lambda::EventSourceMapping')).filter(
      (m) => m.Properties.FunctionName.Ref === functionId(t, 'ingest'),
    );
    assert.deepEqual(mapping?.Properties.ScalingConfig, { MaximumConcurrency: 7 });
    assert.equal(
      functionProps(t, 'campaign-tick').ReservedConcurrentExecutions,
      undefined,
      'not the API setting',
    );
    t.resourcePropertiesCountIs('AWS::Logs::LogGroup', { RetentionInDays: 30 }, ALL_FUNCTIONS.length);
  });

  it('OtaFunction honours memory, timeout and reserved concurrency props', () => {
    const stack = newStack();
    new OtaFunction(stack, 'F', {
      entry: 'lambdas/auth-api/handler.ts',
      serviceName: 'x',
      memorySize: 1024,
      timeout: Duration.seconds(20),
      reservedConcurrentExecutions: 3,
      metricsNamespace: 'Other',
    });
    Template.fromStack(stack).hasResourceProperties('AWS::Lambda::Function', {
      MemorySize: 1024,
      Timeout: 20,
      ReservedConcurrentExecutions: 3,
      Environment: { Variables: { POWERTOOLS_METRICS_NAMESPACE: 'Other', POWERTOOLS_SERVICE_NAME: 'x' } },
    });
  });

  it('OtaFunction rejects settings that cannot work', () => {
    const make = (extra: object) => () =>
      new OtaFunction(newStack(), 'F', { entry: 'lambdas/auth-api/handler.ts', serviceName: 'x', ...extra });
    assert.throws(make({ memorySize: 64 }), /memorySize/);
    assert.throws(make({ timeout: Duration.minutes(16) }), /timeout/);
    assert.throws(make({ reservedConcurrentExecutions: 0 }), /reservedConcurrentExecutions/);
  });
});
