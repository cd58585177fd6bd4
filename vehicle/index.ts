/** The TCU agent's public API. */

export type { DownloadAnswer, UpdateList } from '../protocol/responses.js';
export {
  parseTrustDocument,
  TRUST_ECU,
  TRUST_HARDWARE_ID,
  trustDocument,
  trustDocumentOf,
} from '../protocol/trust-document.js';
export {
  type AgentEvent,
  type AgentHooks,
  type AgentMqttFactory,
  type AgentMqttSession,
  type EcuConfig,
  type InstallStep,
  VehicleAgent,
  type VehicleAgentOptions,
} from './agent.js';
export {
  registerVehicle,
  type StatusBody,
  type VehicleApi,
  VehicleApiClient,
  type VehicleApiClientOptions,
} from './api-client.js';
export { type BackoffPolicy, backoffDelay } from './backoff.js';
export { DirectHttpsTransport, type DirectHttpsTransportOptions } from './direct-https.js';
export {
  Downloader,
  type DownloaderOptions,
  type DownloadJob,
  type DownloadSource,
  type DownloadStats,
} from './downloader.js';
export {
  AgentError,
  ApiError,
  DownloadError,
  type DownloadFailure,
  InstallError,
  StateError,
} from './errors.js';
export {
  type HttpRequest,
  type HttpResponse,
  type HttpTransport,
  NodeHttpsTransport,
  TransportError,
} from './http-transport.js';
export { type FreeSpace, systemFreeSpace, verifyImageFile } from './image-file.js';
export {
  type ActiveImage,
  type EcuInstaller,
  FileSlotInstaller,
  type HealthCheck,
  type ImageToInstall,
  type RecoveryReport,
} from './installer.js';
export { type AgentLogger, jsonLinesLogger, type LogLevel, silentLogger, withFields } from './logger.js';
export {
  type MqttClientFactory,
  MqttSession,
  type MqttSessionOptions,
  NotConnectedError,
} from './mqtt-session.js';
export {
  type OfferCheckContext,
  type OfferVerdict,
  type RejectReason,
  verifyOffer,
} from './offer-verifier.js';
export {
  challengeSigner,
  type DeviceIdentity,
  ensureIdentity,
  loadTrustAnchors,
  saveCertificate,
  type TrustAnchors,
} from './provisioning.js';
export { ProgressThrottle, SpeedMonitor } from './rate.js';
export { appendReport, Reporter, type ReportInput, TERMINAL_REPORTS } from './reporter.js';
export { type AgentRuntime, systemRuntime } from './runtime.js';
export {
  type CreateAgentOptions,
  type CreatedAgent,
  createVehicleAgent,
  ecuDir,
  identityDir,
} from './setup.js';
export { type AgentState, STATE_FILE, StateStore } from './state-store.js';
export { installedReleaseKeys, trustDocumentHealthCheck } from './trust-store.js';
export {
  checkSafety,
  FileVehicleState,
  type InstallSafetyPolicy,
  StaticVehicleState,
  type VehicleConditions,
  type VehicleStateProvider,
} from './vehicle-state.js';
