/**
 * How a client trusts the platform's HTTPS endpoints when they carry a private CA (the local cloud, LocalStack, an
 * OEM's own PKI): the system roots plus that CA, and certificate checks stay on. One place, because the obvious
 * way is slow: Node's https.Agent folds its `ca` option into the connection-pool key it computes for every request
 * (about 216 KB of text with the ~150 system roots: measured 1 ms a request) and builds a fresh secure context
 * from it for every new socket (33 ms). Under the local cloud's DynamoDB traffic that was half the CPU of the
 * Lambda workers. Here the secure context is built once and the agent is given only that.
 */
import { Agent, type AgentOptions } from 'node:https';
import { createSecureContext, rootCertificates } from 'node:tls';

/** An HTTPS agent trusting the system roots plus `caPems` through one prebuilt secure context. */
export function trustingAgent(caPems: string | readonly string[], options: AgentOptions = {}): Agent {
  const ca = [...rootCertificates, ...(typeof caPems === 'string' ? [caPems] : caPems)];
  return new Agent({ ...options, secureContext: createSecureContext({ ca }) });
}
