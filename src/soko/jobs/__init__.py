"""Leased background jobs: one ``jobs`` table, one runner per serving process (design in ``jobs/runner.py``)."""

from soko.jobs.kinds import registry_jobs
from soko.jobs.runner import JobKind, JobRunner, job_table

__all__ = ["JobKind", "JobRunner", "job_table", "registry_jobs"]
