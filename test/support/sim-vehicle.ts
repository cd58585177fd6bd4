/**
 * A simulated vehicle for campaign tests: a real mutual-TLS MQTT session that answers offers the way a scripted
 * TCU would (progress then an outcome, with campaign id and sequence numbers), without downloading anything.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { offerSchema, type UpdateOffer } from '../../protocol/offer.js';

export type Behaviour = 'succeed' | 'fail' | 'silent' | 'hold';

/** The download every succeeding simulated vehicle reports: 20,000 bytes fetched for a 64 KiB image. */
export const SIM_TRANSFER = { bytes_fetched: 20_000, bytes_reused: 40_000, bytes_image: 64 * 1024 } as const;

export class SimVehicle {
  readonly offers: UpdateOffer[] = [];
  private sequence = 0;
  private client?: MqttClient;
  /** Offers held by a 'hold' vehicle, finished on demand. */
  private held: UpdateOffer[] = [];

  constructor(
    readonly vin: string,
    private readonly identity: { keyPem: string; certPem: string },
    public behaviour: Behaviour,
  ) {}

  async connect(url: string, caPem: string): Promise<void> {
    const client = mqtt.connect(url, {
      protocolVersion: 4,
      clientId: this.vin,
      clean: false,
      ca: caPem,
      key: this.identity.keyPem,
      cert: this.identity.certPem,
      rejectUnauthorized: true,
      reconnectPeriod: 500,
      connectTimeout: 5000,
    });
    this.client = client;
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync(`vehicle/updates/${this.vin}/issue_details`, { qos: 1 });
    client.on('message', (_topic, payload) => {
      const offer = offerSchema.parse(JSON.parse(payload.toString()));
      this.offers.push(offer);
      void this.answer(offer);
    });
  }

  private async send(channel: 'progress' | 'status', body: Record<string, unknown>): Promise<void> {
    this.sequence += 1;
    await this.client!.publishAsync(
      `vehicle/updates/${this.vin}/${channel}`,
      JSON.stringify({ ...body, sequence: this.sequence }),
      { qos: 1 },
    );
  }

  private async answer(offer: UpdateOffer): Promise<void> {
    const campaign_id = offer.campaign_id ?? undefined;
    switch (this.behaviour) {
      case 'silent':
        return;
      case 'hold':
        // Held before it is announced: a test that sees 'installing' in the backend may release it at once.
        this.held.push(offer);
        await this.send('progress', { progress: 30, status: 'installing', campaign_id });
        return;
      case 'fail':
        await this.send('progress', { progress: 50, status: 'downloading', campaign_id });
        await this.send('status', { status: 'failed', reason: 'injected failure', campaign_id });
        return;
      case 'succeed':
        await this.send('progress', { progress: 50, status: 'downloading', campaign_id });
        await this.send('progress', { progress: 80, status: 'installing', campaign_id });
        // What its download cost (SIM_TRANSFER: a delta), with the outcome report as the agent sends it.
        await this.send('status', { status: 'completed', campaign_id, ...SIM_TRANSFER });
        return;
    }
  }

  /** Publishes a report exactly as given (a duplicate, a late one) on the vehicle's own topic, QoS 1. */
  async publishRaw(channel: 'progress' | 'status', body: Record<string, unknown>): Promise<void> {
    await this.client!.publishAsync(`vehicle/updates/${this.vin}/${channel}`, JSON.stringify(body), {
      qos: 1,
    });
  }

  /** Finishes the installs a 'hold' vehicle started. */
  async release(outcome: 'completed' | 'rolled_back'): Promise<void> {
    for (const offer of this.held.splice(0)) {
      await this.send('status', {
        status: outcome,
        campaign_id: offer.campaign_id ?? undefined,
        ...(outcome === 'completed' ? SIM_TRANSFER : {}),
      });
    }
  }

  async end(): Promise<void> {
    await this.client?.endAsync();
  }
}
