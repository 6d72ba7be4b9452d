"""Which process runs a trial, and whether it still lives: a run restarted after a kill retries its dead trial at once.

Optuna's heartbeat (``RDBStorage(heartbeat_interval=..., grace_period=...)``) fails a killed worker's trial only
once the grace period has passed; a run restarted sooner sees the dead trial as RUNNING, as if another worker
were running that search, and the journal storage has no heartbeat at all. So each trial records its owner —
host name, process-id namespace (containers sharing a host name each have their own), process id and the
process's start time (a process id can be reused) — in its user attributes, and a worker fails the RUNNING
trials whose owner on this host is gone and enqueues each once more with the same value, exactly as Optuna's
``RetryHeartbeatStaleTrialCallback`` does for a stale heartbeat. Owners elsewhere cannot be checked from here:
their trials are left to the heartbeat.

Example:
    >>> owner = this_process()
    >>> is_dead(owner), is_dead({**owner, "pid": 2**22 + 1}), is_dead({**owner, "host": "elsewhere"})
    (False, True, False)
"""
from __future__ import annotations

import copy
import os
import socket
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import psutil
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

__all__ = ["FAILURE", "OWNER", "claim", "is_dead", "retry_dead", "this_process"]

#: user attribute of a trial: the process running it (see :func:`this_process`)
OWNER = "owner"
#: user attribute of a failed trial: why it failed
FAILURE = "failure"
#: how many times one value is retried after its process died (as the heartbeat's retry callback)
MAX_RETRY = 3


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # Linux: 'pid:[4026531836]'
    except OSError:
        return ""


def this_process() -> dict[str, Any]:
    """This process as a trial's owner: host, process-id namespace, process id and start time (epoch seconds)."""
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid_namespace": _pid_namespace(), "pid": me.pid,
            "started": round(me.create_time(), 2)}


def claim(trial: optuna.Trial) -> None:
    """Record this process as ``trial``'s owner."""
    trial.set_user_attr(OWNER, this_process())


def is_dead(owner: Mapping[str, Any]) -> bool:
    """Whether ``owner`` (see :func:`this_process`) ran here and its process is gone (or its id reused)."""
    here = owner.get("host") == socket.gethostname() and owner.get("pid_namespace") == _pid_namespace()
    if not here or not isinstance(owner.get("pid"), int):
        return False
    try:
        started = psutil.Process(owner["pid"]).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. no access to another user's process: it lives
        return False
    return abs(started - float(owner.get("started", started))) > 1.0


def retry_dead(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of ``study`` whose owner died on this host and enqueue each again; their numbers.

    Workers restarted together may both find a dead trial: the storage lets one of them fail it, and only that
    one enqueues the retry.
    """
    storage = study._storage  # Optuna's own fail_stale_trials works on the storage the same way
    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if not isinstance(owner, Mapping) or not is_dead(owner):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, FAILURE,
                                        f"its process {owner['host']}:{owner['pid']} ended while it ran")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            continue
        failed = copy.deepcopy(storage.get_trial(trial._trial_id))
        failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k not in (OWNER, FAILURE)}
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8, still there in 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, failed)
        retried.append(trial.number)
    return retried
