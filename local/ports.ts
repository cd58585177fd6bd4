/** The local cloud's fixed ports (npm start), in a module of its own so the vehicle agent can name them without loading the emulators. */
export const DEFAULT_PORTS = { api: 8443, s3: 9443, dynamodb: 8444, mqtt: 8883, iotData: 8445 } as const;

/**
 * The local topic rule's name. On AWS the stack fixes it (`<stack name>_vehicle_messages`, lib/fleet-ingest.ts, and
 * the stack output IngestRuleName) and a vehicle is configured with it; here it is constant, so agents started
 * against the local cloud (`npm run agent -- --local`) report through Basic Ingest without being told.
 */
export const LOCAL_INGEST_RULE = 'ota_local_vehicle_messages';
