// metav1.Status, the body of every API error, and the error the store throws to produce one.
// Codes and reasons as k8s.io/apimachinery/pkg/api/errors makes them, so a client (and the agent's
// error handling) sees what a real kube-apiserver answers.

export type StatusReason =
  | 'BadRequest'
  | 'Unauthorized'
  | 'Forbidden'
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Gone'
  | 'Expired'
  | 'Invalid'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType'
  | 'ServiceUnavailable'
  | 'Timeout'
  | 'TooManyRequests'
  | 'InternalError';

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: { reason?: string; message?: string; field?: string }[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: StatusReason;
  details?: StatusDetails;
  code: number;
}

const REASON_BY_CODE: Record<number, StatusReason> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

export function status(code: number, message: string, reason?: StatusReason, details?: StatusDetails): Status {
  const s: Status = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: reason ?? REASON_BY_CODE[code] ?? 'InternalError',
    code,
  };
  if (details) s.details = details;
  return s;
}

/** Thrown by the store and the request decoding; the server answers it as a Status. */
export class StatusError extends Error {
  readonly status: Status;
  constructor(code: number, message: string, reason?: StatusReason, details?: StatusDetails) {
    super(message);
    this.name = 'StatusError';
    this.status = status(code, message, reason, details);
  }
  get code(): number {
    return this.status.code;
  }

  static badRequest(message: string): StatusError {
    return new StatusError(400, message, 'BadRequest');
  }
  static notFound(resource: string, name: string): StatusError {
    return new StatusError(404, `${resource} "${name}" not found`, 'NotFound', { name, kind: resource });
  }
  static alreadyExists(resource: string, name: string): StatusError {
    return new StatusError(409, `${resource} "${name}" already exists`, 'AlreadyExists', { name, kind: resource });
  }
  static conflict(resource: string, name: string): StatusError {
    return new StatusError(
      409,
      `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
      'Conflict',
      { name, kind: resource },
    );
  }
  static invalid(kind: string, name: string, field: string, message: string): StatusError {
    return new StatusError(422, `${kind} "${name}" is invalid: ${field}: ${message}`, 'Invalid', {
      name,
      kind,
      causes: [{ reason: 'FieldValueInvalid', message, field }],
    });
  }
  /** 410 Expired: what a watch from a compacted resourceVersion or a stale continue token gets */
  static expired(message: string): StatusError {
    return new StatusError(410, message, 'Expired');
  }
}
