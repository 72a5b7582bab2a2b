// Errors a user can cause (bad flag, bad annotation, missing privilege, missing kernel feature, bpffs not
// mounted) are UserErrors: the CLI prints `meshlane: <message>` on one line, no stack trace. The message
// names the cause and the fix.
export class UserError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UserError';
  }
}

export function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}
