/** Publishes update offers through the IoT Data Plane API, QoS 1 so persistent sessions queue them. */
import { type IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import { issueDetailsTopic, type OfferPublisher, type UpdateOffer } from '../core/offer.js';

export class IotOfferPublisher implements OfferPublisher {
  constructor(private readonly client: IoTDataPlaneClient) {}

  async publish(vin: string, offer: UpdateOffer): Promise<void> {
    await this.client.send(
      new PublishCommand({
        topic: issueDetailsTopic(vin),
        qos: 1,
        payload: Buffer.from(JSON.stringify(offer)),
        contentType: 'application/json',
      }),
    );
  }
}
