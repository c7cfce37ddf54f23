"""ARC adaptation job records on disk, beside the adapted rows: a restart keeps what clients poll.

With TRM_ADAPT_DIR set, every job is written as `<dir>/<model>/jobs/<id>.json` when it is created and
whenever its state changes (atomically: a crash never leaves half a record). On the next start the
records come back:

- finished jobs (succeeded, failed, cancelled) are kept as they were, until TRM_ADAPT_TTL_S after
  they finished; a succeeded job's rows are installed from the rows file as before;
- queued jobs are queued again, in the order they were created; a job that was running when the
  server stopped cleanly was put back to queued at shutdown (service/tasks/adapt.py), so it runs
  again from the start;
- a job still marked running was interrupted by a crash (or a shutdown that could not wait for it):
  it is marked failed with that reason rather than run again, so that a job which brings the
  process down cannot do it on every start.

Without TRM_ADAPT_DIR nothing is written and a restart forgets every job (rows too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trm_core.tasks import arc

if TYPE_CHECKING:
    from service.tasks.adapt import Job

logger = logging.getLogger(__name__)

FORMAT = 1
INTERRUPTED = ("the server stopped while this job was running and could not put it back in the queue "
               "(a crash, or a shutdown that did not wait for it); POST the task again to retry")


class JobRecords:
    """The job records of one model's folder (`root` None: keep nothing)."""

    def __init__(self, root: Path | None) -> None:
        self.folder = None if root is None else root / "jobs"

    def _path(self, job_id: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{job_id}.json"

    def save(self, job: Job, *, state: str | None = None) -> None:
        """Write the job's record; `state` overrides what is recorded (a shutdown puts jobs back to queued)."""
        if self.folder is None:
            return
        record = to_record(job)
        if state is not None:
            record.update(state=state, started=None, finished=None)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{job.id}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._path(job.id))

    def delete(self, job_id: str) -> None:
        if self.folder is not None:
            self._path(job_id).unlink(missing_ok=True)

    def load(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first; unreadable ones are logged and left on disk."""
        if self.folder is None or not self.folder.is_dir():
            return []
        records = []
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                if record.get("format") != FORMAT:
                    raise ValueError(f"format {record.get('format')!r}, expected {FORMAT}")
                records.append(record)
            except (OSError, ValueError) as e:
                logger.warning("skipping adaptation job record %s: %s", path, e)
        return sorted(records, key=lambda r: r["created"])


def to_record(job: Job) -> dict[str, Any]:
    return {
        "format": FORMAT, "id": job.id, "model": job.model, "fingerprint": job.fingerprint,
        "task": job.task.to_json(with_test_outputs=True), "config": dataclasses.asdict(job.config),
        "state": job.state, "created": job.created, "started": job.started, "finished": job.finished,
        "result": job.result, "error": job.error, "cached": job.cached,
        "progress": dataclasses.asdict(job.progress) if job.progress is not None else None,
    }


def from_record(record: dict[str, Any], job_class: type[Job], config_class: type, progress_class: type) -> Job:
    """The job as it was; a record still marked running becomes failed (see the module docstring).
    The classes are training.adapt's, passed in: the service imports training only to run jobs."""
    progress = record.get("progress")
    job = job_class(
        id=record["id"], model=record["model"], fingerprint=record["fingerprint"],
        task=arc.parse_task(record["task"], max_size=arc.CANVAS), config=config_class(**record["config"]),
        state=record["state"], created=record["created"], started=record["started"], finished=record["finished"],
        result=record["result"], error=record["error"], cached=record["cached"],
        progress=progress_class(**progress) if progress is not None else None)
    if job.state == "running":
        job.finish("failed", INTERRUPTED)
    return job
