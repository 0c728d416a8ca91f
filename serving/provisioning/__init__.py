"""The Pre-Allocation Manager: the reservation ledger and the providers that hold warm capacity."""
