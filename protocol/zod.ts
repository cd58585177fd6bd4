/**
 * The schema library of the protocol: zod's mini build, with English issue messages.
 *
 * Every Lambda function loads the protocol's schemas at init. zod's classic API carries every method on every
 * schema (about 100 KiB minified, 15 to 20 ms to import); the mini build is functional (`z.optional(s)`,
 * `s.check(z.maxLength(n))`), so a bundle keeps only the parts it calls. Mini ships no messages; the English
 * locale is the one classic zod uses, so a refused request reads the same ("Too big: expected string to have
 * <=64 characters"). Every protocol module imports zod from here, so the locale is set wherever a schema exists.
 */
import { en } from 'zod/locales';
import * as z from 'zod/mini';

z.config(en());

export * from 'zod/mini';
