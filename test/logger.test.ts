import { describe, expect, it } from 'vitest';
import { scrubUrl } from '../src/logger.js';

describe('scrubUrl', () => {
  it.each([
    ['/a?token=ct_secret', '/a?token=[redacted]'],
    ['/a?x=1&token=ct_secret&y=2', '/a?x=1&token=[redacted]&y=2'],
    ['/a?access_token=ya29&KEY=adm', '/a?access_token=[redacted]&KEY=[redacted]'],
    // The query parser decodes names: these are `token` to the route, so they are to the log.
    ['/a?%74oken=ct_secret', '/a?%74oken=[redacted]'],
    ['/a?%54%4F%4B%45%4E=ct_secret', '/a?%54%4F%4B%45%4E=[redacted]'],
    ['/a?token+=ct_secret', '/a?token+=[redacted]'],
    // A name that does not decode: redacted rather than guessed at.
    ['/a?%E0%A4%A=ct_secret', '/a?%E0%A4%A=[redacted]'],
    ['/a?after=msg_1&limit=5', '/a?after=msg_1&limit=5'],
    // The router reads the query from the first `?` or `#` on, and a `#` does not end it.
    ['/a?token=ct_secret#frag', '/a?token=[redacted]'],
    ['/a?after=m#&token=ct_secret', '/a?after=m#&token=[redacted]'],
    ['/a#token=ct_secret', '/a#token=[redacted]'],
    ['/a/no-query', '/a/no-query'],
    ['/a?flag', '/a?flag'],
    ['/a?tokens=1&mykey=2', '/a?tokens=1&mykey=2'],
  ])('%s -> %s', (url, scrubbed) => {
    expect(scrubUrl(url)).toBe(scrubbed);
  });
});
