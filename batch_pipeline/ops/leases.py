"""The batch's lease under Dagster (``core.ledger.lease``): the holder is the run id, the TTL and
heartbeat come from the environment (``settings.lease_settings``), read when each step starts.

``plan_chunks`` takes it (``take_lease``: a holder whose run this instance knows has finished
is taken over at once), every step that writes keeps it with ``keep_lease`` (renewed before the
step writes, then by a heartbeat while it works), ``deliver`` gives it back at the end and
``aggregate`` when the batch failed. ``release_lease_on_failure``, a failure hook on every op
of the jobs, gives it back when a step fails for good (a retry keeps it), so that the next run
need not wait for it to expire.
"""

from __future__ import annotations

from typing import Any

from dagster import HookContext, OpExecutionContext, failure_hook

from batch_pipeline.core.ledger import Lease, LeaseKeeper, Ledger
from batch_pipeline.settings import lease_settings


def run_finished(instance: Any, run_id: str) -> bool:
    """Whether this Dagster instance has the run ``run_id`` and it has ended (succeeded,
    failed or canceled). A run it does not know (another CLI process with its own temporary
    instance) is not known to have ended: its lease must expire first."""
    try:
        run = instance.get_run_by_id(run_id)
    except Exception:  # a holder id that is not a run id of this instance's storage
        return False
    return run is not None and run.is_finished


def take_lease(context: OpExecutionContext, ledger: Ledger, batch_id: str) -> Lease:
    """This run's lease on the batch, or BatchBusyError naming the run that holds it."""
    settings = lease_settings()
    return ledger.acquire_lease(
        batch_id,
        context.run_id,
        settings.ttl_seconds,
        holder_finished=lambda holder: run_finished(context.instance, holder),
    )


def keep_lease(context: OpExecutionContext, ledger: Ledger, batch_id: str) -> LeaseKeeper:
    """``with keep_lease(...)``: renewed now (LeaseLostError if another run took it: the step
    fails before writing), then every heartbeat while the block runs."""
    return LeaseKeeper(ledger, batch_id, context.run_id, lease_settings())


@failure_hook(required_resource_keys={"ledger"})
def release_lease_on_failure(context: HookContext) -> None:
    """A step failed for good: give back the leases this run holds."""
    try:
        released = context.resources.ledger.get_ledger().release_leases(context.run_id)
    except Exception as exc:  # the ledger itself may be what failed; the lease then expires
        context.log.warning(f"could not give back this run's batch lease: {exc}")
        return
    if released:
        context.log.info(f"gave back the lease of batch {', '.join(released)}")
