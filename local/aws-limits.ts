/**
 * AWS service limits the local cloud enforces so that a test fails where AWS would (from the service quotas
 * documentation). Timeouts and memory per function are in lambdas/core/functions.ts; IoT's 128 KB message limit is
 * protocol/topics.ts MAX_MQTT_PAYLOAD_BYTES (broker and data-plane shim); DynamoDB's 400 KB item limit is enforced by
 * dynalite itself (maxItemSizeKb, default 400: PutItem, UpdateItem and BatchWriteItem).
 */

/** Lambda: largest event of a synchronous invocation (6 MB, the event's JSON); API Gateway then answers 413. */
export const LAMBDA_SYNC_REQUEST_BYTES = 6 * 1024 * 1024;
/** Lambda: largest response of a synchronous invocation (6 MB + 100 bytes, the result's JSON); API Gateway: 502. */
export const LAMBDA_SYNC_RESPONSE_BYTES = 6 * 1024 * 1024 + 100;
/** API Gateway (REST): largest request payload (10 MB); larger requests are refused with 413. */
export const API_GATEWAY_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024;
/** API Gateway (REST): integration timeout (29 s); the caller then gets 504 while the function may run on. */
export const API_GATEWAY_INTEGRATION_TIMEOUT_MS = 29_000;
/** DynamoDB: largest item, attribute names and values included (400 KB). */
export const DYNAMODB_MAX_ITEM_BYTES = 400 * 1024;
