import { pino, type Logger } from 'pino';

// Structured logs (JSON lines on stderr) for the agent; the CLI's own output stays on stdout.
export function makeLogger(level: string = process.env.MESHLANE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { app: 'meshlane' } }, pino.destination(2));
}
export type { Logger };
