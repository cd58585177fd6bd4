/** The shape of a command row and the small helpers the per-noun command tables share. */
import type { CommandSpec } from './args.js';
import type { Context } from './context.js';

/** Runs a command; a number answered is the exit code (anything else: 0). */
export type Runner = (ctx: Context) => Promise<unknown>;

export interface Command extends CommandSpec {
  readonly load: () => Promise<Runner>;
}

export const id = (name: string, description: string) => [{ name, description, required: true }] as const;
/** Listings are read a page at a time (the API never answers an unbounded list); the CLI follows every page. */
export const pagination = {
  limit: { type: 'string', placeholder: '<n>', description: 'items per API page, 1-1000 (default 100)' },
} as const;
