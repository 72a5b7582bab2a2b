import { pino, type Logger } from 'pino';

// Structured logs (JSON lines on stderr) for the agent; the CLI's own output stays on stdout.
// Written synchronously, like the CLI's error line: a failed start's logs come before its error, in
// order, and none is lost when the process exits at once (the agent logs changes, not traffic).
export function makeLogger(level: string = process.env.MESHLANE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { app: 'meshlane' } }, pino.destination({ dest: 2, sync: true }));
}
export type { Logger };
