/**
 * How long a service that refused a request asked to be left alone: an HTTP `Retry-After` value,
 * either delay-seconds or an HTTP-date (RFC 9110 §10.2.3), in milliseconds from `nowMs`. Undefined
 * when the value is absent or neither form; a date already past is 0.
 */
export function retryAfterMs(value: string | null | undefined, nowMs: number): number | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  // delay-seconds is 1*DIGIT; a decimal is tolerated, as some servers send one.
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  // An HTTP-date (IMF-fixdate or the obsolete RFC 850 form) names its weekday and ends in "GMT";
  // Date.parse alone would also accept "Nov 2026". The asctime form, zoneless, is not read.
  if (!/^[A-Za-z]{3,9},? .*GMT$/.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The `Retry-After` of a response's `headers` (a fetch `Headers` or a plain record), in milliseconds. */
export function retryAfterOf(headers: unknown, nowMs = Date.now()): number | undefined {
  return retryAfterMs(headerOf(headers, 'retry-after'), nowMs);
}

/** A header read from what an HTTP client hands back: a fetch `Headers` or a plain record. */
export function headerOf(headers: unknown, name: string): string | undefined {
  if (!headers || typeof headers !== 'object') return undefined;
  const get = (headers as { get?: unknown }).get;
  if (typeof get === 'function') return (get.call(headers, name) as string | null) ?? undefined;
  const value = (headers as Record<string, unknown>)[name.toLowerCase()];
  return typeof value === 'string' ? value : undefined;
}
