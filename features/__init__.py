"""Floor 2 of prewarm: telemetry importers, the validation gate, hourly aggregation and the
Feast repository."""
