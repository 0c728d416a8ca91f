"""Floor 5 of prewarm: the simulated world of users and regions, and the closed-loop evaluation."""
