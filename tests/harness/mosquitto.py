"""Placeholder: fixtures for a real mosquitto."""
