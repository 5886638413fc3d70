"""Whole-file checks of mappings, beyond the schema: lookup files exist and parse."""

from __future__ import annotations

from pathlib import Path

from mailsync.mapping.engine import _lookup_table
from mailsync.mapping.spec import MappingError, load_mapping_file
from mailsync.settings import MAPPINGS_DIR


def check_paths(paths: list[Path]) -> tuple[list[str], int]:
    """Validate every mapping file under `paths` (default: include/mappings); return problems."""
    files: list[Path] = []
    for path in paths or [MAPPINGS_DIR]:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    problems = []
    for file in files:
        try:
            mapping = load_mapping_file(file)
            for name in mapping.lookups:
                _lookup_table(mapping, name)
        except MappingError as exc:
            problems.append(str(exc))
        except (OSError, KeyError, ValueError) as exc:
            problems.append(f"{file}: lookup table cannot be read: {exc}")
    return problems, len(files)
