"""Kubernetes pieces outside the Helm chart, and the canary promotion gate."""
