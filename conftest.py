"""Shared fixtures for the core's and the plugins' tests (see ctfhost/testing.py)."""

pytest_plugins = ["ctfhost.testing"]
