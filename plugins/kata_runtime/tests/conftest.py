"""Fixtures for the kata runtime tests: kmock's emulator from the kctf plugin."""

from ctfhost_plugin_kctf.testing import kube_cluster  # noqa: F401  (a fixture)
