"""Parse prompt files into records, validating every row before anything is written.

Formats:
- ``parti``: PartiPrompts TSV (``Prompt, Category, Challenge, Note``).
- ``dsg``: DSG-1k CSV, one row per question, questions carrying their parent propositions.
- ``jsonl`` / ``csv``: one prompt per row with ``prompt``, optional ``category``, ``id``,
  ``challenge`` and ``questions`` (a list; in CSV a JSON array). A question is a string or
  ``{"text": ..., "parents": [orders]}``, numbered from 1 in list order.

Every error names the file, the line and the field: ``PATH:LINE: field 'F': message``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("parti", "dsg", "jsonl", "csv")


class ImportFileError(ValueError):
    """A bad import file (prompts, an image manifest): ``PATH[:LINE]: field 'F': message``."""

    def __init__(self, path: Path | str, line: int | None, field_name: str | None, message: str):
        self.path, self.line, self.field_name = str(path), line, field_name
        location = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{location}:{what} {message}")


class PromptImportError(ImportFileError):
    pass


@dataclass
class QuestionRecord:
    order: int
    text: str
    parents: tuple[int, ...] = ()
    category: str = ""
    detail: str = ""
    semantic_tuple: str = ""
    line: int = 0


@dataclass
class PromptRecord:
    external_id: str
    text: str
    category: str = ""
    challenge: str = ""
    note: str = ""
    line: int = 0
    questions: list[QuestionRecord] = field(default_factory=list)


def text_id(prefix: str, text: str) -> str:
    """A stable id for sources without one: the same text always maps to the same prompt."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]}"


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "parti"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        with _open(path) as f:
            header = f.readline()
        return "dsg" if "proposition_id" in header and "question_natural_language" in header else "csv"
    raise PromptImportError(path, None, None, "cannot tell the format from the file name; pass --format")


@dataclass
class ParsedPrompts:
    records: list[PromptRecord]
    warnings: list[str] = field(default_factory=list)


def parse_prompt_file(
    path: str | Path, fmt: str | None = None, *, max_lengths: Mapping[str, int] | None = None
) -> ParsedPrompts:
    """Parse and validate the whole file.

    ``max_lengths`` bounds the record fields stored in length-limited columns: keys are
    ``PromptRecord`` field names, or ``question.`` + a ``QuestionRecord`` field name.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptImportError(path, None, None, "no such file")
    parsers = {"parti": _parse_parti, "dsg": _parse_dsg, "jsonl": _parse_jsonl, "csv": _parse_csv}
    if fmt is not None and fmt not in parsers:
        raise PromptImportError(path, None, None, f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    warnings: list[str] = []
    try:
        fmt = fmt or detect_format(path)
        records = parsers[fmt](path, warnings)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except OSError as exc:
        raise PromptImportError(path, None, None, f"cannot read: {exc.strerror}") from None
    _check_stored_values(path, fmt, records, max_lengths or {})
    if not records:
        raise PromptImportError(path, None, None, "the file holds no prompts")
    seen: dict[str, int] = {}
    for record in records:
        if record.external_id in seen:
            raise PromptImportError(
                path, record.line, "id", f"duplicate prompt id '{record.external_id}' (first on line {seen[record.external_id]})"
            )
        seen[record.external_id] = record.line
    return ParsedPrompts(records, warnings)


def _open(path: Path):
    return path.open(encoding="utf-8-sig", newline="")


def _not_utf8(path: Path) -> PromptImportError:
    """Name the line of the first byte that is not UTF-8 (the reader's offset is per chunk)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return PromptImportError(path, None, None, "UTF-16 text; save the file as UTF-8")
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return PromptImportError(path, line, None, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")
    return PromptImportError(path, None, None, "not UTF-8 text; save the file as UTF-8")


# Record field -> the name the file uses for it, per format; for error messages.
_SOURCE_FIELDS = {
    "parti": {"text": "Prompt", "category": "Category", "challenge": "Challenge", "note": "Note"},
    "dsg": {
        "external_id": "item_id", "text": "text", "category": "item_id",
        "question.text": "question_natural_language", "question.category": "category_broad",
        "question.detail": "category_detailed", "question.semantic_tuple": "tuple",
    },
    "plain": {
        "external_id": "id", "text": "prompt", "category": "category", "challenge": "challenge",
        "question.text": "questions[{index}].text", "question.category": "questions[{index}].category",
    },
}


def _check_stored_values(path: Path, fmt: str, records: list[PromptRecord], max_lengths: Mapping[str, int]) -> None:
    """Reject what the database would: NUL characters anywhere, and text longer than its column."""
    names = _SOURCE_FIELDS.get(fmt, _SOURCE_FIELDS["plain"])

    def check(key: str, value: str, line: int, index: int = 0) -> None:
        name = names.get(key, key).format(index=index)
        if "\x00" in value:
            raise PromptImportError(path, line, name, "contains a NUL character")
        limit = max_lengths.get(key)
        if limit is not None and len(value) > limit:
            raise PromptImportError(path, line, name, f"longer than {limit} characters ({len(value)})")

    for record in records:
        for key in ("external_id", "text", "category", "challenge", "note"):
            check(key, getattr(record, key), record.line)
        for question in record.questions:
            for key in ("text", "category", "detail", "semantic_tuple"):
                check(f"question.{key}", getattr(question, key), question.line, question.order - 1)


def _dict_rows(
    path: Path, delimiter: str, required: tuple[str, ...], *, one_line_rows: bool = False
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows with the line each starts on; checks the header names the required columns.

    An unterminated quote is an error, not a field that swallows the rest of the file. A file
    whose quotes are loose text (``one_line_rows``: PartiPrompts writes ``"WORD" painted ...``)
    is read leniently, and a row running onto a second line is the error instead.
    """
    with _open(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter, strict=not one_line_rows)
        start = 1
        try:
            header = reader.fieldnames or []
            for column in required:
                if column not in header:
                    raise PromptImportError(path, 1, column, f"missing column (header has: {', '.join(header)})")
            start = reader.line_num + 1
            for row in reader:
                if None in row:
                    raise PromptImportError(
                        path, start, None, f"{len(header) + len(row[None])} columns, header has {len(header)}"
                    )
                if one_line_rows and any("\n" in v or "\r" in v for v in row.values() if isinstance(v, str)):
                    raise PromptImportError(path, start, None, "unterminated quote")
                yield start, row
                start = reader.line_num + 1
        except csv.Error as exc:
            message = "unterminated quote" if "unexpected end of data" in str(exc) else f"malformed row ({exc})"
            raise PromptImportError(path, start, None, message) from None


def _required_text(path: Path, line: int, row: dict, name: str) -> str:
    value = (row.get(name) or "").strip()
    if not value:
        raise PromptImportError(path, line, name, "empty")
    return value


def _parse_parti(path: Path, warnings: list[str]) -> list[PromptRecord]:
    records = []
    for line, row in _dict_rows(path, "\t", ("Prompt", "Category"), one_line_rows=True):
        text = _required_text(path, line, row, "Prompt")
        records.append(
            PromptRecord(
                external_id=text_id("parti", text),
                text=text,
                category=(row.get("Category") or "").strip(),
                challenge=(row.get("Challenge") or "").strip(),
                note=(row.get("Note") or "").strip(),
                line=line,
            )
        )
    return records


def _parse_int(path: Path, line: int, name: str, value: str) -> int:
    try:
        return int(value.strip())
    except (ValueError, AttributeError):
        raise PromptImportError(path, line, name, f"expected an integer, got {value!r}") from None


def _parse_dsg(path: Path, warnings: list[str]) -> list[PromptRecord]:
    required = ("item_id", "text", "proposition_id", "dependency", "question_natural_language")
    by_item: dict[str, PromptRecord] = {}
    for line, row in _dict_rows(path, ",", required):
        item_id = _required_text(path, line, row, "item_id")
        text = _required_text(path, line, row, "text")
        order = _parse_int(path, line, "proposition_id", row["proposition_id"])
        if order < 1:
            raise PromptImportError(path, line, "proposition_id", f"must be ≥ 1, got {order}")
        parents = _dsg_parents(path, line, row.get("dependency") or "", warnings)
        if order in parents:
            warnings.append(f"{path}:{line}: field 'dependency': question {order} depends on itself; dropped that edge")
            parents = tuple(p for p in parents if p != order)
        record = by_item.get(item_id)
        if record is None:
            record = by_item[item_id] = PromptRecord(
                external_id=item_id,
                text=text,
                category=_item_source(item_id),
                line=line,
            )
        elif record.text != text:
            raise PromptImportError(path, line, "text", f"differs from the text of '{item_id}' on line {record.line}")
        if any(q.order == order for q in record.questions):
            raise PromptImportError(path, line, "proposition_id", f"duplicate proposition {order} for '{item_id}'")
        record.questions.append(
            QuestionRecord(
                order=order,
                text=_required_text(path, line, row, "question_natural_language"),
                parents=parents,
                category=(row.get("category_broad") or "").strip(),
                detail=(row.get("category_detailed") or "").strip(),
                semantic_tuple=(row.get("tuple") or "").strip(),
                line=line,
            )
        )
    records = list(by_item.values())
    for record in records:
        _repair_question_graph(path, record, warnings)
    return records


def _dsg_parents(path: Path, line: int, dependency: str, warnings: list[str]) -> tuple[int, ...]:
    """``0`` means no parent; otherwise a comma-separated list of proposition ids.

    The published DSG-1k file has a handful of rows where a keyword slipped into the list
    (``"5, right"``). The numeric ids are kept and the stray words reported as warnings; a
    list with no number at all is an error.
    """
    tokens = [t.strip() for t in dependency.split(",") if t.strip()]
    numbers = [int(t) for t in tokens if t.isdigit()]
    stray = [t for t in tokens if not t.isdigit()]
    if not numbers:
        raise PromptImportError(path, line, "dependency", f"expected proposition ids, got {dependency!r}")
    if stray:
        warnings.append(f"{path}:{line}: field 'dependency': ignored non-numeric {', '.join(map(repr, stray))}")
    return tuple(n for n in numbers if n != 0)


def _item_source(item_id: str) -> str:
    """DSG-1k item ids name the source dataset they were drawn from (e.g. ``whoops_5``)."""
    return item_id.rsplit("_", 1)[0] if "_" in item_id else ""


def _repair_question_graph(path: Path, record: PromptRecord, warnings: list[str]) -> None:
    """Drop parent links the DSG rule cannot use: unknown parents and links that close a cycle.

    The published DSG-1k file has a few of each; every dropped link is reported.
    """
    orders = {q.order: q for q in record.questions}
    for question in record.questions:
        unknown = [p for p in question.parents if p not in orders]
        if unknown:
            warnings.append(
                f"{path}:{question.line}: field 'dependency': question {question.order} of '{record.external_id}' "
                f"depends on unknown question(s) {', '.join(map(str, unknown))}; dropped"
            )
            question.parents = tuple(p for p in question.parents if p in orders)
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done

    def visit(order: int) -> None:
        state[order] = 1
        question = orders[order]
        for parent in question.parents:
            if state.get(parent) == 1:
                warnings.append(
                    f"{path}:{question.line}: field 'dependency': question {order} of '{record.external_id}' "
                    f"closes a cycle through question {parent}; dropped that edge"
                )
                question.parents = tuple(p for p in question.parents if p != parent)
            elif parent not in state:
                visit(parent)
        state[order] = 2

    for order in sorted(orders):
        if order not in state:
            visit(order)


def _questions_from(path: Path, line: int, value, field_name: str = "questions") -> list[QuestionRecord]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PromptImportError(path, line, field_name, f"not a JSON list: {exc.msg}") from None
        except RecursionError:
            raise PromptImportError(path, line, field_name, "JSON nested too deeply") from None
        except ValueError as exc:
            raise PromptImportError(path, line, field_name, f"not a JSON list: {exc}") from None
    if not isinstance(value, list):
        raise PromptImportError(path, line, field_name, "expected a list")
    questions = []
    for i, item in enumerate(value, start=1):
        name = f"{field_name}[{i - 1}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise PromptImportError(path, line, name, "expected a string or an object with 'text'")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise PromptImportError(path, line, f"{name}.text", "missing or empty")
        parents = item.get("parents", [])
        if not isinstance(parents, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in parents):
            raise PromptImportError(path, line, f"{name}.parents", "expected a list of question numbers")
        if any(p < 1 or p >= i for p in parents):
            raise PromptImportError(path, line, f"{name}.parents", f"parents must be earlier questions (1..{i - 1})")
        category = item.get("category", "")
        if not isinstance(category, str):
            raise PromptImportError(path, line, f"{name}.category", "expected a string")
        questions.append(QuestionRecord(order=i, text=text.strip(), parents=tuple(parents), category=category, line=line))
    return questions


def _plain_record(path: Path, line: int, row: dict) -> PromptRecord:
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise PromptImportError(path, line, "prompt", "missing or empty")
    text = text.strip()
    for name in ("category", "id", "challenge"):
        if row.get(name) is not None and not isinstance(row[name], (str, int)):
            raise PromptImportError(path, line, name, "expected a string")
    external_id = str(row.get("id") or "").strip() or text_id("prompt", text)
    return PromptRecord(
        external_id=external_id,
        text=text,
        category=str(row.get("category") or "").strip(),
        challenge=str(row.get("challenge") or "").strip(),
        line=line,
        questions=_questions_from(path, line, row.get("questions")),
    )


def json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of a JSONL file with their line numbers; blank lines are skipped."""
    with _open(path) as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise PromptImportError(path, line, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            except RecursionError:
                raise PromptImportError(path, line, None, "JSON nested too deeply") from None
            except ValueError as exc:  # e.g. an integer past Python's digit limit
                raise PromptImportError(path, line, None, f"invalid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise PromptImportError(path, line, None, "expected a JSON object")
            yield line, row


def table_rows(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """The rows of a JSONL (``.jsonl``, ``.ndjson``) or CSV (``.csv``) file, told apart by the name.

    CSV rows must have the ``required`` columns; every error is an ``ImportFileError`` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptImportError(path, None, None, "no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise PromptImportError(path, None, None, "expected a .jsonl or .csv file")
    try:
        yield from json_rows(path) if suffix != ".csv" else _dict_rows(path, ",", required)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except OSError as exc:
        raise PromptImportError(path, None, None, f"cannot read: {exc.strerror}") from None


def _parse_jsonl(path: Path, warnings: list[str]) -> list[PromptRecord]:
    return [_plain_record(path, line, row) for line, row in json_rows(path)]


def _parse_csv(path: Path, warnings: list[str]) -> list[PromptRecord]:
    return [_plain_record(path, line, row) for line, row in _dict_rows(path, ",", ("prompt",))]
