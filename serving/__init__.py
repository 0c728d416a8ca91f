"""Serving: batch prediction, placement, pre-allocation (provisioning) and the router."""
