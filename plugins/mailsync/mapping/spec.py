"""The mapping file format: one YAML per integration in include/mappings/.

A mapping says, for data engineers and not in code: which sources feed an integration, how each
source column is typed and normalised (`inputs`), what identifies a record (`key`), which
duplicate wins, which rows are bad (`checks`), and how destination fields are built (`fields`).
Loading validates the whole file; an error names the file, the line and the key that is wrong.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailsync.settings import MAPPINGS_DIR

InputType = Literal["string", "email", "date", "datetime", "decimal", "integer", "boolean"]
Normalizer = Literal["strip", "lower", "upper", "collapse_spaces", "nfc"]
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_EXPR_WORDS = {"and", "or", "not", "True", "False", "abs"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Input(_Strict):
    """One typed source column. Constraints here become row-level quality checks."""

    source: str | None = None  # column name in the extract; defaults to the input's own name
    type: InputType = "string"
    required: bool = False  # a null makes the row bad (rule `missing_<input>`)
    normalize: tuple[Normalizer, ...] = ()
    formats: tuple[str, ...] = ()  # date/datetime input formats, tried in order
    true_values: tuple[str, ...] = ("true", "1", "yes", "y", "t")
    false_values: tuple[str, ...] = ("false", "0", "no", "n", "f")
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None  # closed set of values (after normalisation)
    max_length: int | None = None
    rule: str | None = None  # name of the quarantine reason; derived from the type if absent
    # Text hygiene of string inputs: a control character (C0, DEL, C1; with `multiline` tab and
    # newline are allowed) never reaches a destination. `strip` (the default for string inputs)
    # removes it — tab, CR and LF become a space — before the `normalize` steps; `quarantine`
    # makes the row bad instead (rule `control_characters`): for ids and codes, where one means
    # the value is corrupt.
    control_chars: Literal["strip", "quarantine"] | None = None
    multiline: bool = False

    @property
    def controls(self) -> str | None:
        """The control-character rule in force: stated, or `strip` for string inputs."""
        return self.control_chars or ("strip" if self.type == "string" else None)

    @model_validator(mode="after")
    def _text_options_only_for_strings(self) -> Input:
        if (self.control_chars is not None or self.multiline) and self.type != "string":
            raise ValueError("`control_chars`/`multiline` only apply to inputs of type string")
        return self

    @model_validator(mode="after")
    def _formats_only_for_dates(self) -> Input:
        if self.formats and self.type not in ("date", "datetime"):
            raise ValueError("`formats` only applies to inputs of type date or datetime")
        if (self.min is not None or self.max is not None) and self.type not in ("decimal", "integer"):
            raise ValueError("`min`/`max` only apply to inputs of type decimal or integer")
        for fmt in self.formats:
            if "%" not in fmt and fmt != "ISO8601":
                raise ValueError(f"date format {fmt!r} has no strftime directive such as %Y")
        return self


class Key(_Strict):
    """The match key: an input whose normalised value identifies a record."""

    input: str


class Duplicates(_Strict):
    """Which record wins when several share a key. Stated, never left to chance."""

    keep: Literal["latest", "earliest", "first", "last"] = "latest"
    order_by: str | None = None  # an input; required for latest/earliest
    max_share: float = Field(default=0.0, ge=0, le=1)  # more duplicates than this fails the run

    @model_validator(mode="after")
    def _order_needed(self) -> Duplicates:
        if self.keep in ("latest", "earliest") and not self.order_by:
            raise ValueError(f"keep: {self.keep} needs `order_by` (an input to compare)")
        return self


class RowCount(_Strict):
    min: int = 0
    max: int | None = None


class Checks(_Strict):
    """Data-quality rules of a source beyond the per-input constraints."""

    bad_row_threshold: float = Field(default=0.05, ge=0, le=1)  # share of quarantined rows that fails the run
    row_count: RowCount = RowCount()
    max_null_share: dict[str, float] = {}  # input -> highest share of nulls accepted (dataset level)


class FileFormat(_Strict):
    """How a partner file is read (mailsync.files): only the dialect stated here is accepted;
    a file in another one is refused with a message naming what differs."""

    encoding: tuple[str, ...] = ("utf-8",)  # one or a list, tried in order: strict (utf-8) before cp1252
    delimiter: tuple[str, ...] = (",",)  # one, or a list to sniff from the header line
    bom: Literal["strip", "refuse"] = "strip"  # a byte-order mark also settles the encoding
    header_case: Literal["insensitive", "exact"] = "insensitive"  # header names, in any order
    # required: a file whose last line has no line break was cut off, and is refused
    final_newline: Literal["required", "optional"] = "optional"

    @field_validator("encoding", "delimiter", mode="before")
    @classmethod
    def _one_or_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("encoding")
    @classmethod
    def _known_encodings(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import codecs

        for name in v:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown encoding {name!r}") from None
        if not v:
            raise ValueError("name at least one encoding")
        return v

    @field_validator("delimiter")
    @classmethod
    def _single_characters(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(len(d) != 1 or d in '"\r\n' for d in v):
            raise ValueError("each delimiter is one character (not a quote or a line break)")
        return v


class Source(_Strict):
    system: str
    object: str
    key: Key
    inputs: dict[Annotated[str, Field(pattern=_NAME)], Input]
    duplicates: Duplicates = Duplicates(keep="last")
    checks: Checks = Checks()
    # Secondary sources: the primary input this source's key joins to (left join). A secondary
    # source without `join` is only quality-checked; code derives the primary source from it
    # (e.g. engagement totals aggregated from activity rows).
    join: str | None = None
    file: FileFormat = FileFormat()  # for sources that arrive as files
    # A joined source's row that is quarantined tonight: keep_last keeps the value that key had
    # last time (a bad row must not blank a customer's tier), clear joins nothing for it. A key
    # absent from a complete file is gone either way.
    on_invalid: Literal["keep_last", "clear"] = "keep_last"

    @model_validator(mode="after")
    def _references(self) -> Source:
        names = set(self.inputs)
        refs = {"key.input": self.key.input, "duplicates.order_by": self.duplicates.order_by}
        refs.update({f"checks.max_null_share.{k}": k for k in self.checks.max_null_share})
        for where, name in refs.items():
            if name is not None and name not in names:
                raise ValueError(f"{where} refers to {name!r}, which is not an input of this source")
        return self


class Lookup(_Strict):
    """A named lookup table: inline `values`, or a CSV file (relative to include/)."""

    values: dict[str, str] | None = None
    file: str | None = None
    key_column: str = "key"
    value_column: str = "value"

    @model_validator(mode="after")
    def _one_of(self) -> Lookup:
        if (self.values is None) == (self.file is None):
            raise ValueError("a lookup needs exactly one of `values` or `file`")
        return self


class DestField(_Strict):
    """How one destination field is built. Steps apply in the order of the attributes below."""

    from_: str | None = Field(default=None, alias="from")  # "input" or "source.input"
    template: str | None = None  # e.g. "CL-{customer_id}"; every {name} is an input
    expr: str | None = None  # arithmetic over inputs, evaluated vectorised (pandas eval)
    const: str | float | bool | None = None
    lookup: str | dict[str, str] | None = None  # named lookup or inline table
    on_missing: Literal["null", "keep"] = "null"  # value absent from the lookup
    format: str | None = None  # strftime for dates, e.g. "%m/%d"
    round: int | None = None
    case: Literal["upper", "lower", "title"] | None = None
    max_length: int | None = None
    default: str | float | bool | None = None  # fills nulls
    type: Literal["string", "number", "integer", "boolean"] = "string"
    on_null: Literal["clear", "omit"] = "clear"  # null: send an empty value, or leave the field alone

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_origin(self) -> DestField:
        origins = [o for o in ("from_", "template", "expr", "const") if getattr(self, o) is not None]
        if len(origins) != 1:
            raise ValueError("a field needs exactly one of `from`, `template`, `expr`, `const`")
        return self

    @field_validator("template")
    @classmethod
    def _template_names(cls, v: str | None) -> str | None:
        if v is not None and not re.findall(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}", v):
            raise ValueError("a template needs at least one {input} placeholder")
        return v

    def references(self) -> list[str]:
        """Inputs this field reads, as written ("name" or "source.name")."""
        if self.from_:
            return [self.from_]
        if self.template:
            return re.findall(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}", self.template)
        if self.expr:
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?", self.expr)
            return [w for w in words if w not in _EXPR_WORDS]
        return []


class Destination(_Strict):
    system: str
    object: str
    key: str  # the destination field holding the match key
    on_removed: Literal["archive", "delete"] = "archive"  # records whose source is gone
    # Destinations found by email (the CRM): several records may share one normalised email (one
    # person entered twice). `all_records_with_email` (the default) writes to every one of them;
    # `one_record_per_email` only to the record the CRM's read by email returns.
    write_back: Literal["all_records_with_email", "one_record_per_email"] = "all_records_with_email"


class Reporting(_Strict):
    """Amounts are also reported in one currency, converted with a daily rate table (CSV with
    date, currency, <rate column>: units of the reporting currency per unit of the other)."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    rates_file: str
    rate_column: str = "eur_per_unit"


class Attribution(_Strict):
    """How an order is credited to a campaign; the rule itself is stated in the description."""

    window_days: int = Field(default=7, ge=0, le=90)


class Mapping(_Strict):
    """A whole integration mapping (one YAML file)."""

    version: Literal[1] = 1
    name: str = Field(pattern=_NAME)
    description: str = ""
    sources: dict[Annotated[str, Field(pattern=_NAME)], Source]
    destination: Destination
    lookups: dict[str, Lookup] = {}
    fields: dict[str, DestField]
    reporting: Reporting | None = None
    attribution: Attribution | None = None

    @property
    def primary(self) -> str:
        """The first source listed drives the records; others are joined onto it."""
        return next(iter(self.sources))

    @model_validator(mode="after")
    def _cross_references(self) -> Mapping:
        primary, *secondary = list(self.sources)
        if self.sources[primary].join is not None:
            raise ValueError(f"sources.{primary}: the primary (first) source cannot have a `join`")
        for name in secondary:
            join = self.sources[name].join
            if join is not None and join not in self.sources[primary].inputs:
                raise ValueError(
                    f"sources.{name}.join refers to {join!r}, which is not an input of {primary}"
                )
        if self.destination.key not in self.fields:
            raise ValueError(f"destination.key {self.destination.key!r} is not one of the fields")
        for fname, f in self.fields.items():
            for ref in f.references():
                self.resolve(ref, where=f"fields.{fname}")
            if isinstance(f.lookup, str) and f.lookup not in self.lookups:
                raise ValueError(f"fields.{fname}.lookup refers to {f.lookup!r}, which is not in `lookups`")
        return self

    def resolve(self, ref: str, *, where: str = "") -> tuple[str, str]:
        """Split "source.input" or "input" (of the primary source) and check that it exists."""
        source, _, name = ref.rpartition(".")
        source = source or self.primary
        if source not in self.sources:
            raise ValueError(f"{where} refers to source {source!r}, which is not in `sources`")
        if name not in self.sources[source].inputs:
            raise ValueError(f"{where} refers to {ref!r}, which is not an input of source {source!r}")
        return (source, name)


class MappingError(ValueError):
    """A mapping file is invalid; the message names the file, line and key."""


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = (*path, str(k.value))
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, str(i))
                lines[p] = v.start_mark.line + 1
                walk(v, p)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def parse_mapping(text: str, *, filename: str = "<mapping>") -> Mapping:
    """Validate mapping YAML text; raise MappingError naming file:line and the key path."""
    try:
        data: Any = yaml.safe_load(text)  # safe loading only: no tags that build objects
    except yaml.YAMLError as exc:
        raise MappingError(f"{filename}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MappingError(f"{filename}: a mapping file must be a YAML mapping at the top level")
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
            loc = tuple(p for p in loc if not p.startswith("function-"))
            line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
            where = f"{filename}:{line}" if line else filename
            key = ".".join(loc) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the mapping format; a typo?)"
            problems.append(f"{where}: {key}: {msg}")
        raise MappingError("invalid mapping\n  " + "\n  ".join(problems)) from None


def load_mapping_file(path: Path) -> Mapping:
    path = Path(path)
    return parse_mapping(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def load_mapping(name: str) -> Mapping:
    """The named integration mapping from include/mappings/<name>.yaml (cached per process)."""
    return load_mapping_file(MAPPINGS_DIR / f"{name}.yaml")
