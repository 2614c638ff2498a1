/**
 * The few typed errors the service speaks in. Each carries its HTTP status, which the error handler
 * in src/http/app.ts answers with; customer-facing texts are in src/domain/messages.ts.
 */
export class DomainError extends Error {
  constructor(
    message: string,
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class InvalidInput extends DomainError {
  constructor(message: string) {
    super(message, 400);
  }
}
export class Unauthorized extends DomainError {
  constructor(message = 'Missing or invalid credentials: send Authorization: Bearer <key>') {
    super(message, 401);
  }
}
export class Forbidden extends DomainError {
  constructor(message = 'This credential does not give access to that resource') {
    super(message, 403);
  }
}
export class NotFound extends DomainError {
  constructor(message: string) {
    super(message, 404);
  }
}
export class Conflict extends DomainError {
  constructor(message: string) {
    super(message, 409);
  }
}
/** A call to Google or OpenAI failed; `retryable` says whether trying again may help. */
export class Upstream extends DomainError {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown; retryAfterMs?: number | undefined },
  ) {
    super(message, 502, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
  readonly retryAfterMs: number | undefined;
}
/** The owner has no Google Calendar connection, or Google revoked it. */
export class CalendarNotConnected extends DomainError {
  constructor(
    message: string,
    readonly reason: 'missing' | 'revoked',
  ) {
    super(message, 409);
  }
}
/**
 * Google no longer keeps changes from as far back as asked (events.list's 410 `updatedMinTooLongAgo`):
 * read the whole window instead.
 */
export class ChangesTooOld extends Error {
  constructor(message = 'Google no longer keeps changes from that far back') {
    super(message);
    this.name = 'ChangesTooOld';
  }
}
/**
 * More changed events than one read goes through (events.list's page limit): read each meeting's
 * event by itself instead.
 */
export class TooManyChanges extends Error {
  constructor(message = 'More changed events than one read goes through') {
    super(message);
    this.name = 'TooManyChanges';
  }
}
