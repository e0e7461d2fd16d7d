/** Largest reply a health check reads while looking for its expected bytes. */
export const MAX_REPLY_BYTES = 65_536;

/** Whether a health-check reply contains the expected bytes, or matches the expected regex (on its UTF-8 text). */
export function replyMatches(reply: Buffer, expect: Buffer | RegExp): boolean {
  if (expect instanceof RegExp) return expect.test(reply.toString('utf8'));
  return reply.includes(expect);
}

/** The start of a reply, printable, for failure messages. */
export function describeReply(reply: Buffer): string {
  const text = JSON.stringify(reply.subarray(0, 48).toString('latin1'));
  return reply.length > 48 ? `${text}…` : text;
}
