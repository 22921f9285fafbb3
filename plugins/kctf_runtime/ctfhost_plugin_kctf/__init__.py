"""ctfhost runtime "kctf": each instance is a kCTF-style pod (nsjail inside) in a namespace of its own.

The hooks live in :mod:`ctfhost_plugin_kctf.hooks`; the entry point
``ctfhost: kctf`` loads :data:`runtime`. Other Kubernetes runtimes (the
``kata-firecracker`` plugin) reuse the same class with their own profile.
"""

from ctfhost_plugin_kctf.manifests import KCTF, Profile
from ctfhost_plugin_kctf.hooks import KubernetesRuntime

__version__ = "0.1.0"

__all__ = ["KCTF", "KubernetesRuntime", "Profile", "runtime"]

runtime = KubernetesRuntime(KCTF)
