"""The worker side: the agent (`flask ctfhost worker`), its RQ jobs, the launch/destroy lifecycle and queue helpers."""
