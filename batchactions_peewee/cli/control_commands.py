"""Control commands: ``pause``, ``resume``, ``abort`` and ``delete`` act on a job for every
worker of the fleet at once, through the database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..checks import PURGEABLE
from ..model import JobState, JobStatus
from ..store import PeeweeStateStore
from .common import CliError, database_url, find_job, hint, open_store
from .render import print_json

#: Each control: its store method, its past tense, the statuses it moves and where to.
_CONTROLS: dict[str, tuple[str, str, tuple[JobStatus, ...], JobStatus]] = {
    "pause": ("pause_job", "paused", (JobStatus.PROCESSING,), JobStatus.PAUSED),
    "resume": ("resume_job", "resumed", (JobStatus.PAUSED,), JobStatus.PROCESSING),
    "abort": (
        "abort_job",
        "aborted",
        (JobStatus.CREATED, JobStatus.PROCESSING, JobStatus.PAUSED),
        JobStatus.ABORTED,
    ),
}

_WHAT_HAPPENS = {
    "pause": "workers finish the batch in hand, then wait; `{resume}` lets them go on",
    "resume": "waiting workers go on within a poll interval",
    "abort": "workers give back the batch in hand at their next lease renewal and stop",
}


def _control(name: str) -> Callable[[argparse.Namespace], int]:
    method, done, movable, target = _CONTROLS[name]

    def command(args: argparse.Namespace) -> int:
        store = open_store(args)
        job = find_job(store, args.job_id, database_url(args))
        moved = bool(getattr(store, method)(args.job_id))
        after = target if moved else _status(store, job)  # a move says where it went
        if args.json:
            print_json({"jobId": args.job_id, "changed": moved, "status": after.value})
            return 0 if moved or after == target else 1
        if moved:
            note = _WHAT_HAPPENS[name].format(resume=hint(args, "resume", args.job_id))
            print(f"job {args.job_id} {done}: {note}")
            return 0
        if after == target:
            print(f"job {args.job_id} is already {after.value}")
            return 0
        wanted = " or ".join(s.value for s in movable)
        raise CliError(f"job {args.job_id} is {after.value}: only a {wanted} job can be {done}")

    command.__doc__ = f"{name.capitalize()} a job for all its workers."
    return command


def _status(store: PeeweeStateStore, job: JobState) -> JobStatus:
    """The job's status now: a control that moved nothing met it elsewhere."""
    state = store.get_job_state(job.id)
    return JobStatus(state.status) if state is not None else JobStatus(job.status)


cmd_pause = _control("pause")
cmd_resume = _control("resume")
cmd_abort = _control("abort")


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a job with its batches and records."""
    store = open_store(args)
    job = find_job(store, args.job_id, database_url(args))
    status = JobStatus(job.status)
    if status in (JobStatus.PROCESSING, JobStatus.PAUSED) and not args.force:
        raise CliError(
            f"job {args.job_id} is {status.value}: its workers may still be running; "
            f"`{hint(args, 'abort', args.job_id)}` first, or pass --force"
        )
    deleted = store.delete_job(args.job_id)
    if args.json:
        print_json({"jobId": args.job_id, "deleted": deleted})
    else:
        print(f"deleted job {args.job_id} with its batches and records")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete old finished jobs with their records and batches (``--dry-run``: list them)."""
    store = open_store(args)
    statuses = [JobStatus(s) for s in args.status] if args.status else list(PURGEABLE)
    if args.dry_run:
        doomed = store.purge_candidates(older_than_ms=args.older_than, statuses=statuses)
        if args.json:
            print_json({"dryRun": True, "jobs": doomed, "count": len(doomed)})
        else:
            for job_id in doomed:
                print(job_id)
            print(f"{len(doomed)} job(s) would be purged", file=sys.stderr)
        return 0
    purged = store.purge_jobs(older_than_ms=args.older_than, statuses=statuses)
    if args.json:
        print_json({"dryRun": False, "count": purged})
    else:
        print(f"purged {purged} job(s) with their batches and records")
    return 0
