"""Shared fixtures for the core's and the plugins' tests: the core's, and the Docker and Traefik plugins' own."""

pytest_plugins = ["ctfhost.testing", "ctfhost_plugin_docker.testing", "ctfhost_plugin_traefik.testing"]
