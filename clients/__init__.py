"""Clients of the deployed search and recommend pipelines."""
