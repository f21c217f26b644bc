"""Placeholder: fixtures for a real kafka."""
