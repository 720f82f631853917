"""`validate_dataset`: may this prepared dataset be trained on? Runs the GX suites, writes the reports.

Critical failures stop a pipeline run (unknown label, empty cell, duplicate path, a class missing from a
split, a missing split, the same image in train and val/test, too many rejected inputs, image sizes out of
bounds, a listed file missing or unreadable). Warnings (class imbalance, tiny classes) are reported only.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from fer_core.config import ValidateConfig
from fer_core.labels import class_names as canonical_class_names
from fer_core.data.prepared import MANIFEST_COLUMNS, SPLITS
from fer_core.validation.facts import (
    DatasetInfo,
    ManifestParseError,
    probe_images,
    read_dataset_info,
    read_manifest,
    read_rejected,
)
from fer_core.validation.report import write_reports
from fer_core.validation.suite import (
    CRITICAL,
    WARNING,
    CheckResult,
    class_count_checks,
    class_count_table,
    facts_checks,
    facts_table,
    manifest_checks,
    manifest_table,
    python_check,
    run_checks,
    splits_present_check,
)


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of `validate_dataset`: `success` is False exactly when a critical check failed."""

    success: bool
    checks: tuple[CheckResult, ...]
    summary: dict[str, Any]
    report_json: Path | None
    report_html: Path | None

    @property
    def failures(self) -> list[CheckResult]:
        """Failed critical checks: each makes the dataset invalid."""
        return [check for check in self.checks if not check.success and check.severity == CRITICAL]

    @property
    def warnings(self) -> list[CheckResult]:
        """Failed warning checks: reported, never blocking."""
        return [check for check in self.checks if not check.success and check.severity == WARNING]


def _dataset_info_check(info: DatasetInfo) -> CheckResult:
    if info.problem:
        return python_check("dataset_json", False, info.problem)
    if info.num_classes not in (7, 8):
        return python_check("dataset_json", False, f"dataset.json: num_classes must be 7 or 8, got {info.num_classes}")
    expected = canonical_class_names(info.num_classes)
    if info.class_names is not None and info.class_names != expected:
        return python_check("dataset_json", False,
                            f"dataset.json: class_names {list(info.class_names)} are not the canonical order "
                            f"{list(expected)}", [{"class_names": list(info.class_names)}])
    return python_check("dataset_json", True, f"dataset.json: {info.num_classes} classes in canonical order")


def _class_counts_summary(class_counts: pd.DataFrame | None) -> dict[str, dict[str, int]]:
    if class_counts is None:
        return {}
    return {split: {row.class_name: int(row.count) for row in group.itertuples()}
            for split, group in class_counts.groupby("split", sort=False)}


def validate_dataset(data_dir: str | Path, config: ValidateConfig, report_dir: str | Path | None = None, *,
                     check_images: bool = True, image_workers: int = 1) -> ValidationResult:
    """Validate DATA_DIR (a prepared dataset) and write report.json + report.html.

    report_dir defaults to DATA_DIR/validation. `check_images=False` skips opening image files (the
    manifest-only checks still run); `image_workers` threads read image headers. Raises
    ManifestNotFoundError when DATA_DIR has no manifest.csv; every other problem is a failed check.
    """
    started = time.perf_counter()
    data_dir = Path(data_dir).resolve()
    report_dir = Path(report_dir).resolve() if report_dir is not None else data_dir / "validation"
    info = read_dataset_info(data_dir)
    checks: list[CheckResult] = [_dataset_info_check(info)]
    num_classes = info.num_classes if checks[0].success else None

    # A missing manifest.csv raises ManifestNotFoundError (the caller's "not a dataset at all");
    # an unreadable one is a failed check with an empty table, so the reports still get written.
    try:
        manifest = read_manifest(data_dir)
        readable = True
    except ManifestParseError as exc:
        readable = False
        checks.append(python_check("manifest_readable", False, str(exc)))
        manifest = pd.DataFrame(columns=["_line", *MANIFEST_COLUMNS])
    try:
        rejected = read_rejected(data_dir)
    except ManifestParseError as exc:
        checks.append(python_check("rejected_csv_readable", False, str(exc)))
        rejected = None

    missing = [column for column in MANIFEST_COLUMNS if column not in manifest.columns]
    if readable:
        checks.append(python_check(
            "manifest_columns", not missing,
            f"manifest.csv lacks column(s) {', '.join(missing)}; expected {','.join(MANIFEST_COLUMNS)}"
            if missing else f"manifest.csv: {len(manifest)} rows with all columns {','.join(MANIFEST_COLUMNS)}",
            [{"missing_column": column} for column in missing]))
    usable = readable and not missing  # row-level checks need every column of a readable table

    tables: dict[str, pd.DataFrame] = {}
    gx_checks = []
    class_counts = None
    image_seconds = 0.0
    if usable:
        images = None
        if check_images:
            image_started = time.perf_counter()
            images = probe_images(data_dir, manifest["path"], workers=image_workers)
            image_seconds = time.perf_counter() - image_started
        table = manifest_table(manifest, num_classes, images)
        tables["manifest"] = table
        gx_checks += [splits_present_check(), *manifest_checks(table, config, num_classes, check_images)]
        if num_classes is not None:
            class_counts = class_count_table(manifest, num_classes)
            tables["class_counts"] = class_counts
            gx_checks += class_count_checks(config)
    if rejected is not None:
        facts = facts_table(len(manifest), rejected, info.num_inputs, class_counts)
        tables["facts"] = facts
        gx_checks += facts_checks(config, facts, rejected, class_counts)
    data_docs = report_dir / "data_docs"  # Great Expectations' own site, for its users (index.html)
    if data_docs.exists():
        shutil.rmtree(data_docs)  # a previous validation's site in our own report folder
    gx_results, statistics = run_checks(tables, gx_checks, data_docs) if gx_checks else ([], {})
    checks += gx_results

    failures = [c for c in checks if not c.success and c.severity == CRITICAL]
    warnings = [c for c in checks if not c.success and c.severity == WARNING]
    summary: dict[str, Any] = {
        "rows": len(manifest),
        "num_classes": num_classes,
        "split_rows": {split: int((manifest["split"] == split).sum()) for split in SPLITS}
        if "split" in manifest.columns else {},
        "class_counts": _class_counts_summary(class_counts),
        "num_inputs": int(tables["facts"]["num_inputs"].iloc[0]) if "facts" in tables else None,
        "rejected_errors": rejected.errors if rejected else None,
        "rejected_dropped": rejected.dropped if rejected else None,
        "image_checks": bool(check_images and usable),
        "image_check_seconds": round(image_seconds, 3),
        "checks": len(checks),
        "passed": sum(c.success for c in checks),
        "critical_failures": len(failures),
        "warnings": len(warnings),
    }
    summary["seconds"] = round(time.perf_counter() - started, 3)
    import great_expectations as gx  # already imported by run_checks; only its version is wanted here

    report = {
        "success": not failures,
        "data_dir": str(data_dir),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config),
        "summary": summary,
        "checks": [check.to_dict() for check in checks],
        "great_expectations": {"version": gx.__version__, "statistics": statistics},
    }
    json_path, html_path = write_reports(report, report_dir)
    return ValidationResult(not failures, tuple(checks), summary, json_path, html_path)
