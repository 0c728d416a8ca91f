"""Floor 6 of prewarm: the application (the `prewarm` command, benchmarks, the demo)."""
