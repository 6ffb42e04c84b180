"""Imports of uploaded files, run on the default queue: a prompt file, or a .zip of images and their manifest.

The research API checks what it can within the request (the prompt file's every row; the archive's
directory and the manifest's name), stores the upload as an ``ImportJob`` and answers 202; the task
runs the same service ``manage.py import_prompts`` / ``import_images`` call, all or nothing, and
records the result or the refusal. A refusal is ``{detail, code, field, line, file_field}``, as the
API answers a bad request, with the files named as they are in the upload, never as on the server.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from catalog import services
from catalog.models import ImportJob
from catalog.prompt_import import ImportFileError

logger = logging.getLogger(__name__)

IMPORT_TASK = "catalog.tasks.import_run"
# An uploaded image archive: bounds on what it may unpack to.
ARCHIVE_MAX_FILES = 20_000
ARCHIVE_MAX_BYTES = 4 * 1024**3
MANIFEST_SUFFIXES = (".jsonl", ".csv")
# A job left running (or queued) this long lost its worker (or its message): it is run again.
IMPORT_STALE = timedelta(hours=1)
# What reading a damaged or hostile .zip raises.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError,
               OSError, ValueError)


class UploadRefused(ValueError):
    """An upload refused within the request: ``body`` is the API's refusal, ``{detail, code, field, line,
    file_field}``."""

    def __init__(self, body: dict):
        super().__init__(body["detail"])
        self.body = body


class ArchiveError(ImportFileError):
    """The archive itself is wrong (``field`` "archive"), or its manifest cannot be found ("manifest")."""

    def __init__(self, field: str, message: str):
        super().__init__(field, None, None, message)  # its "path" is the request's field: "archive: message"


def upload_name(name: str, default: str) -> str:
    """An uploaded file's own name, kept to safe characters (the readers tell formats by its suffix)."""
    name = re.sub(r"[^\w.\-]", "_", Path(name or "").name)[-100:].lstrip(".")
    return name or default


def import_error(exc: ImportFileError, *, folder: str | Path, field: str) -> dict:
    """A reader's ``FILE:LINE: field 'F': message`` as the API's refusal body, naming files as the upload does."""
    detail = str(exc)
    if str(folder):
        detail = detail.replace(f"{folder}/", "").replace(str(folder), "")
    if isinstance(exc, ArchiveError):
        return {"detail": detail, "code": "invalid", "field": exc.path, "line": None, "file_field": None}
    if exc.field_name == "set" and exc.line is None:  # the set's name, a field of the request
        return {"detail": detail, "code": "invalid", "field": "set", "line": None, "file_field": None}
    return {"detail": detail, "code": "invalid", "field": field, "line": exc.line, "file_field": exc.field_name}


def _member_path(name: str) -> str:
    """Where ``zipfile`` extracts a member: no drive, no leading slash, no ``.`` or ``..`` parts."""
    return "/".join(part for part in name.replace("\\", "/").split("/") if part not in ("", ".", ".."))


def archive_check(upload, manifest: str = "") -> str:
    """The archive's bounds, and its manifest's path inside it (``manifest``, or the one .jsonl/.csv file at its
    top), read from its directory alone; raises UploadRefused."""
    try:
        return _archive_manifest(upload, manifest)
    except ArchiveError as exc:
        raise UploadRefused(import_error(exc, folder="", field="archive")) from None


def _archive_manifest(upload, manifest: str) -> str:
    try:
        with zipfile.ZipFile(upload) as archive:
            members = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise ArchiveError("archive", f"not a readable .zip file ({str(exc)[:100]})") from None
    if len(members) > ARCHIVE_MAX_FILES:
        raise ArchiveError("archive", f"more than {ARCHIVE_MAX_FILES} files")
    if sum(m.file_size for m in members) > ARCHIVE_MAX_BYTES:
        raise ArchiveError("archive", f"unpacks to more than {ARCHIVE_MAX_BYTES} bytes")
    files = {_member_path(m.filename) for m in members if not m.is_dir()} - {""}
    if manifest:
        wanted = manifest.replace("\\", "/").strip("/")
        if ".." in wanted.split("/") or wanted not in files:
            raise ArchiveError("manifest", f"no file '{manifest[:100]}' in the archive")
        return wanted
    found = sorted(f for f in files if "/" not in f and f.lower().endswith(MANIFEST_SUFFIXES))
    if len(found) != 1:
        raise ArchiveError("manifest", f"the archive holds {len(found)} .jsonl/.csv files at its top; name the manifest")
    return found[0]


def _archive_unpack(source, folder: Path) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            archive.extractall(folder)  # names with .. or a leading / stay inside the folder
    except _ZIP_ERRORS as exc:
        raise ArchiveError("archive", f"not a readable .zip file ({str(exc)[:100]})") from None


def _store(upload, folder: Path, name: str) -> Path:
    path = folder / name
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return path


def prompts_check_upload(upload, *, set_name: str, fmt: str | None) -> str:
    """Check an uploaded prompt file as ``prompts_import`` would, before it is stored; its safe name.
    Raises UploadRefused, naming the file as uploaded."""
    name = upload_name(upload.name, "prompts")
    with tempfile.TemporaryDirectory(prefix="prompts-") as folder:
        path = _store(upload, Path(folder), name)
        try:
            services.prompts_check(path=path, set_name=set_name, fmt=fmt)
        except ImportFileError as exc:
            raise UploadRefused(import_error(exc, folder=folder, field="file")) from None
    return name


@transaction.atomic
def import_job_create(*, kind: str, upload, name: str, params: dict, user=None) -> ImportJob:
    """Store the upload and queue its import (after the commit)."""
    from django.core.files import File

    from config.celery import enqueue_on_commit

    job = ImportJob(kind=kind, upload_name=name, params=params, requested_by=user)
    upload.seek(0)
    job.upload.save(name, File(upload, name=name), save=False)
    job.save()
    enqueue_on_commit(IMPORT_TASK, job.pk)
    return job


def import_run(job_id: int) -> str:
    """Run a queued import job. A job that has ended, or that another worker is running, is left alone (a
    re-delivered task); one left running longer than IMPORT_STALE (its worker died: the import is one
    transaction, so it wrote nothing) is run again."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return "missing"
        stale = job.status == ImportJob.Status.RUNNING and job.started_at < timezone.now() - IMPORT_STALE
        if job.status != ImportJob.Status.QUEUED and not stale:
            return job.status
        job.status, job.started_at = ImportJob.Status.RUNNING, timezone.now()
        job.save(update_fields=["status", "started_at"])
    folder = Path(tempfile.mkdtemp(prefix=f"import-{job.pk}-")).resolve()
    try:
        job.result = _import(job, folder)
        job.status = ImportJob.Status.SUCCEEDED
    except ImportFileError as exc:
        job.error = import_error(exc, folder=folder, field="file" if job.kind == ImportJob.Kind.PROMPTS else "archive")
        job.status = ImportJob.Status.FAILED
    except services.RegistrationError as exc:  # a model --create-models could not register
        job.error = {"detail": str(exc).removeprefix("--"), "code": "invalid", "field": "archive", "line": None,
                     "file_field": None}
        job.status = ImportJob.Status.FAILED
    except Exception as exc:
        logger.exception("import %s failed", job.pk)
        job.error = {"detail": f"the import failed on the server ({type(exc).__name__}); see the worker's log",
                     "code": "error", "field": None, "line": None, "file_field": None}
        job.status = ImportJob.Status.FAILED
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    job.finished_at = timezone.now()
    if job.upload:
        job.upload.delete(save=False)
    job.save(update_fields=["status", "result", "error", "finished_at", "upload"])
    return job.status


def _import(job: ImportJob, folder: Path) -> dict:
    params = job.params
    if job.kind == ImportJob.Kind.PROMPTS:
        path = folder / job.upload_name
        with job.upload.open("rb") as source, path.open("wb") as out:
            shutil.copyfileobj(source, out)
        result = services.prompts_import(
            path=path, set_name=params["set"], fmt=params.get("format"), source=params.get("source") or job.upload_name
        )
        return {
            "prompt_set": result.prompt_set.name, "prompt_set_id": result.prompt_set.pk, "created": result.created,
            "updated": result.updated, "unchanged": result.unchanged, "questions_created": result.questions_created,
            "questions_updated": result.questions_updated, "warnings": result.warnings,
        }
    with job.upload.open("rb") as source:
        _archive_unpack(source, folder)
    result = services.images_import(
        path=folder / params["manifest"], default_prompt_set=params.get("prompt_set", ""),
        create_models=params.get("create_models", False), confined=True,
    )
    return {"created": result.created, "present": result.present, "models_created": result.models_created}


def imports_recover() -> list[int]:
    """Send again every import left queued or running longer than IMPORT_STALE (its message or its worker was
    lost); ``import_run`` takes a stale running one over. Run by celery beat; safe to run any number of times."""
    from config.celery import enqueue_on_commit

    cutoff = timezone.now() - IMPORT_STALE
    stale = list(
        ImportJob.objects.filter(status=ImportJob.Status.RUNNING, started_at__lt=cutoff).values_list("pk", flat=True)
    ) + list(ImportJob.objects.filter(status=ImportJob.Status.QUEUED, created_at__lt=cutoff).values_list("pk", flat=True))
    with transaction.atomic():
        for job_id in stale:
            enqueue_on_commit(IMPORT_TASK, job_id)
    if stale:
        logger.warning("imports %s were stale; sent again", stale)
    return stale
