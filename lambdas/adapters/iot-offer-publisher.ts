/** Publishes update offers through the IoT Data Plane API, QoS 1 so persistent sessions queue them. */
import { type IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import type { UpdateOffer } from '../../protocol/offer.js';
import { vehicleTopic } from '../../protocol/topics.js';
import type { OfferPublisher } from '../core/ports.js';

export class IotOfferPublisher implements OfferPublisher {
  constructor(private readonly client: IoTDataPlaneClient) {}

  async publish(vin: string, offer: UpdateOffer): Promise<void> {
    await this.client.send(
      new PublishCommand({
        topic: vehicleTopic(vin, 'issue_details'),
        qos: 1,
        payload: Buffer.from(JSON.stringify(offer)),
        contentType: 'application/json',
      }),
    );
  }
}
