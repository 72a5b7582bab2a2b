// Process-wide cleanup hooks of long-running commands (the demo and its sandbox): SIGINT and SIGTERM, and
// the synchronous 'exit' (also after an uncaught exception).

/** Install `onSignal` for SIGINT and SIGTERM and `onExit` for 'exit'; returns the function that removes them. */
export function onTermination(onSignal: (sig: NodeJS.Signals) => void, onExit: () => void): () => void {
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  };
}
