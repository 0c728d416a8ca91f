"""The Dynamic Connection Router: routing config, probes, switchover and session migration."""
