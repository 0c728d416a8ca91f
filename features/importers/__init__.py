"""Importers that turn external traces into the telemetry schema."""
