/** S3 implementation of the firmware object store: presigned URLs, multipart uploads, streamed reads. */
import type { Readable } from 'node:stream';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  PutObjectLegalHoldCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { BadRequestError } from '../core/errors.js';
import type { MultipartUploadTarget, ObjectStore } from '../core/ports.js';

export class S3ObjectStore implements ObjectStore {
  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
  ) {}

  presignGet(key: string, versionId: string | undefined, ttlSeconds: number): Promise<string> {
    return getSignedUrl(
      this.s3,
      new GetObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }),
      {
        expiresIn: ttlSeconds,
      },
    );
  }

  presignPut(key: string, size: number, ttlSeconds: number): Promise<string> {
    // The signed Content-Length makes S3 refuse an upload of any other size.
    return getSignedUrl(
      this.s3,
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        ContentLength: size,
        ContentType: 'application/octet-stream',
      }),
      { expiresIn: ttlSeconds, signableHeaders: new Set(['content-length', 'content-type']) },
    );
  }

  async createMultipartUpload(
    key: string,
    size: number,
    partSize: number,
    ttlSeconds: number,
  ): Promise<MultipartUploadTarget> {
    const partCount = Math.ceil(size / partSize);
    if (partCount > 10000)
      throw new BadRequestError('too_many_parts', 'The image needs more than 10,000 parts');
    const created = await this.s3.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        ContentType: 'application/octet-stream',
      }),
    );
    const uploadId = created.UploadId!;
    const parts = await Promise.all(
      Array.from({ length: partCount }, async (_, i) => ({
        partNumber: i + 1,
        url: await getSignedUrl(
          this.s3,
          new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: i + 1 }),
          { expiresIn: ttlSeconds },
        ),
      })),
    );
    return { uploadId, partSize, parts, expiresAt: new Date(Date.now() + ttlSeconds * 1000).toISOString() };
  }

  async completeMultipartUpload(
    key: string,
    uploadId: string,
    parts: { partNumber: number; etag: string }[],
  ): Promise<void> {
    try {
      await this.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: {
            Parts: [...parts]
              .sort((a, b) => a.partNumber - b.partNumber)
              .map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })),
          },
        }),
      );
    } catch (err) {
      // Any client error here means the upload id or its parts are not what S3 holds (NoSuchUpload, InvalidPart,
      // InvalidPartOrder, EntityTooSmall...): the operator's input, not our failure.
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      const status = e.$metadata?.httpStatusCode ?? 500;
      if (status >= 400 && status < 500) {
        throw new BadRequestError(
          'invalid_upload',
          `The multipart upload cannot be completed: ${e.name ?? status}`,
        );
      }
      throw err;
    }
  }

  async head(key: string): Promise<{ size: number; versionId?: string } | undefined> {
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: out.ContentLength ?? 0, versionId: out.VersionId };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404)
        return undefined;
      throw err;
    }
  }

  async read(key: string, versionId?: string, start = 0, endInclusive?: number): Promise<Readable> {
    const range =
      endInclusive !== undefined
        ? `bytes=${start}-${endInclusive}`
        : start > 0
          ? `bytes=${start}-`
          : undefined;
    const out = await this.s3.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: key,
        VersionId: versionId,
        ...(range ? { Range: range } : {}),
      }),
    );
    return out.Body as Readable;
  }

  async put(key: string, body: string): Promise<void> {
    await this.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: 'text/plain' }),
    );
  }

  async delete(key: string, versionId?: string): Promise<void> {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }));
  }

  async protect(key: string, versionId: string | undefined): Promise<void> {
    await this.s3.send(
      new PutObjectLegalHoldCommand({
        Bucket: this.bucket,
        Key: key,
        VersionId: versionId,
        LegalHold: { Status: 'ON' },
      }),
    );
  }
}
