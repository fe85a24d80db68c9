"""Python-based CPU backends served under the native backends' names."""
