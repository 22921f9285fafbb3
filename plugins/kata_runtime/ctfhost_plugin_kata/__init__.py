"""ctfhost runtime "kata-firecracker": each instance is a pod run as a Kata Containers micro-VM (Firecracker).

It is the kctf plugin's Kubernetes runtime with another profile: the same
namespace, quota, policies, service and pod, but with the RuntimeClass
``kata-fc``, no extra capabilities (the VM, not nsjail, is the isolation
boundary), and a namespace quota that adds the RuntimeClass pod overhead to
what the challenge asked for. The entry point ``ctfhost: kata`` loads
:data:`runtime`.
"""

from ctfhost_plugin_kctf import KubernetesRuntime, Profile

__version__ = "0.1.0"

# deploy/kubernetes/runtimeclass-kata-fc.yaml declares the same overhead
DEFAULT_RUNTIME_CLASS = "kata-fc"
DEFAULT_OVERHEAD_CPU = "250m"
DEFAULT_OVERHEAD_MEMORY = "160Mi"

KATA = Profile(
    runtime="kata-firecracker",
    # a plain container's privileges, inside its own VM: no added capability,
    # the runtime's default seccomp profile, read-only root like kctf pods
    pod_security="baseline",
    container_security={"readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}},
    runtime_class_setting="KATA_RUNTIME_CLASS",
    runtime_class_default=DEFAULT_RUNTIME_CLASS,
    overhead_settings=(
        ("KATA_POD_OVERHEAD_CPU", DEFAULT_OVERHEAD_CPU),
        ("KATA_POD_OVERHEAD_MEMORY", DEFAULT_OVERHEAD_MEMORY),
    ),
)

runtime = KubernetesRuntime(KATA)
