"""Floor 1 of prewarm: settings, the telemetry contract, the region catalogue and the latency model.

Nothing here imports from a higher floor (features, training, serving, simulation, prewarm).
"""
