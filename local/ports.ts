/** The local cloud's fixed ports (npm start), in a module of its own so the vehicle agent can name them without loading the emulators. */
export const DEFAULT_PORTS = { api: 8443, s3: 9443, dynamodb: 8444, mqtt: 8883, iotData: 8445 } as const;
