"""What a pod's status says: ready, failed (and why, in Kubernetes' words), or still starting."""

from dataclasses import dataclass

# container waiting reasons that do not fix themselves by waiting
FAILED_WAITING = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreStartHookError",
})


@dataclass(frozen=True)
class PodState:
    ready: bool = False
    failure: str | None = None  # set: the pod will not become ready
    waiting: str | None = None  # what it is waiting for, for a timeout message


def _join(*parts):
    return ": ".join(str(part) for part in parts if part)


def _terminated(state):
    text = f"{state.reason or 'terminated'}, exit code {state.exit_code}"
    return f"{text}: {state.message.strip()}" if state.message else text


def pod_state(pod):
    status = pod.status
    if status is None:
        return PodState(waiting="the pod has no status yet")
    if status.phase in ("Failed", "Succeeded"):
        detail = _join(status.reason, status.message)
        for container in status.container_statuses or []:
            if container.state and container.state.terminated:
                detail = _join(detail, _terminated(container.state.terminated))
        verb = "failed" if status.phase == "Failed" else "exited"
        return PodState(failure=f"the pod {verb}" + (f": {detail}" if detail else ""))
    waiting_for = None
    for container in status.container_statuses or []:
        state = container.state
        if state is None:
            continue
        if state.waiting and state.waiting.reason in FAILED_WAITING:
            failure = _join(state.waiting.reason, state.waiting.message)
            last = container.last_state and container.last_state.terminated
            if last:
                failure += f" (last exit: {_terminated(last)})"
            return PodState(failure=failure)
        if state.terminated:
            return PodState(failure=f"the container terminated ({_terminated(state.terminated)})")
        if state.waiting and state.waiting.reason:
            waiting_for = _join(state.waiting.reason, state.waiting.message)
    conditions = {condition.type: condition for condition in status.conditions or []}
    ready = conditions.get("Ready")
    if ready is not None and ready.status == "True":
        return PodState(ready=True)
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        return PodState(waiting=_join(scheduled.reason or "Unschedulable", scheduled.message))
    if waiting_for:
        return PodState(waiting=waiting_for)
    if ready is not None and ready.message:
        return PodState(waiting=_join(ready.reason, ready.message))
    return PodState(waiting=f"pod phase {status.phase or 'unknown'}")
