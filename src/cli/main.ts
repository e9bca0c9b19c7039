/** bin/dmkit requires this file: it runs the CLI on process.argv and sets the exit status. */
import { runCli } from './cli';
import { nodeRuntime } from './runtime';

// `dmkit ls | head`: a closed pipe ends the output, not the program with a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

runCli(process.argv.slice(2), nodeRuntime()).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // runCli reports every error itself; reaching this is a dmkit bug.
    process.stderr.write(`dmkit: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
