import type { DataFilterFactory } from '../../src/index.js';

/** A data filter that holds every client byte until the client's FIN, then releases them all. */
export const holdUntilEnd: DataFilterFactory = () => {
  const held: Buffer[] = [];
  return {
    onClientData: (chunk) => {
      held.push(chunk);
      return null;
    },
    onClientEnd: () => Buffer.concat(held),
  };
};
