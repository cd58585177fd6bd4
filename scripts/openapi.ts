/** Writes docs/openapi.json from the route schemas: `npm run openapi`. A test fails when the file is stale. */
import { writeFileSync } from 'node:fs';
import { openApiDocument } from '../lambdas/core/openapi.js';

writeFileSync(
  new URL('../docs/openapi.json', import.meta.url),
  `${JSON.stringify(openApiDocument(), null, 2)}\n`,
);
