/**
 * The narrow interfaces the domain needs from the outside world. Each has one AWS implementation in
 * lambdas/adapters; the local cloud reuses those same implementations against emulators.
 *
 * The ports are grouped by concern under ports/; this file is the one entry point the domain and adapters import.
 */

export * from './ports/campaigns.js';
export * from './ports/infrastructure.js';
export * from './ports/releases.js';
export * from './ports/updates.js';
export * from './ports/vehicles.js';
