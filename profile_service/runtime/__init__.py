"""Runtime: the process around the server: settings from the environment, the command line,
start-up and SIGTERM, worker processes, logs, metrics, tracing, memory."""
