import { Type } from 'typebox';
import { USER_ID_PATTERN } from '../domain/calendar-connection.js';

/** Shapes shared by several routes (they also feed /openapi.json). */
export const ErrorBody = Type.Object(
  { success: Type.Literal(false), error: Type.String() },
  { $id: 'ErrorBody', description: 'Every 4xx/5xx answer has this shape.' },
);
export const UserIdParams = Type.Object({
  user_id: Type.String({ pattern: USER_ID_PATTERN, description: '1-50 of letters, digits, -_.@' }),
});
/** Our ids (`cnv_…`, `msg_…`) and the shape any id a request names must have. */
const ID_PATTERN_SOURCE = '^[A-Za-z0-9_-]{1,50}$';
export const ID_PATTERN = new RegExp(ID_PATTERN_SOURCE);
export const IdString = Type.String({ minLength: 1, maxLength: 50, pattern: ID_PATTERN_SOURCE });

export const errorResponses = {
  400: { $ref: 'ErrorBody#' },
  401: { $ref: 'ErrorBody#' },
  403: { $ref: 'ErrorBody#' },
  404: { $ref: 'ErrorBody#' },
  409: { $ref: 'ErrorBody#' },
  429: { $ref: 'ErrorBody#' },
} as const;
