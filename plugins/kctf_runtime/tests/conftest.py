"""Fixtures for the Kubernetes runtime tests: kmock's emulator (see ctfhost_plugin_kctf.testing)."""

from ctfhost_plugin_kctf.testing import kube_cluster  # noqa: F401  (a fixture)
