"""The Great Expectations suites that decide whether a prepared dataset may be trained on.

Three small tables go through GX 1.x (ephemeral context, pandas data source, a dataframe asset, a whole-
dataframe batch definition, an ExpectationSuite and a ValidationDefinition each):
- `manifest`: one row per manifest.csv row, with derived columns for what is not a single-column fact
  (label/label_name agreement, train-vs-eval leakage, the image file's own size);
- `class_counts`: one row per (split, class), zeros included, so "a class is missing from a split" is a
  plain per-row expectation with the offending split and class as its examples;
- `facts`: one row of dataset-level numbers (rejected share, train imbalance ratio).
Every expectation carries `meta.check` (our stable check name) and GX's own `severity`; a failed
`critical` check makes the dataset invalid, a failed `warning` does not.
"""

from __future__ import annotations

from pathlib import Path

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from fer_core.config import ValidateConfig
from fer_core.home import quiet_third_parties
from fer_core.labels import class_names as canonical_class_names
from fer_core.data.prepared import MANIFEST_COLUMNS, SPLITS
from fer_core.validation.facts import (
    IMAGE_MISSING,
    IMAGE_OK,
    IMAGE_UNREADABLE,
    LINE,
    RejectedCounts,
)

CRITICAL = "critical"
WARNING = "warning"
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome as the reports and the CLI show it."""

    name: str
    severity: str  # critical | warning
    success: bool
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "success": self.success,
                "message": self.message, "examples": self.examples}


@dataclass(frozen=True)
class Check:
    """A GX expectation plus how to turn its result into a sentence a person can act on."""

    name: str
    severity: str
    asset: str
    expectation: Any  # a great_expectations Expectation (built lazily: importing GX costs seconds)
    describe: Callable[[dict[str, Any], bool], tuple[str, list[dict[str, Any]]]]


def plain(value: Any) -> Any:
    """numpy/pandas scalars -> JSON-native values (NaN -> None)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        number = float(value)
        if math.isnan(number):
            return None
        return int(number) if number.is_integer() else number
    if isinstance(value, np.bool_):
        return bool(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _public(column: str) -> str:
    return "line" if column == LINE else column.lstrip("_")


def _format_example(example: dict[str, Any]) -> str:
    parts = [f"{key}={value!r}" for key, value in example.items() if key != "line"]
    where = f"line {example['line']}" if "line" in example else ""
    return f"{where} ({', '.join(parts)})" if where else ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# derived columns


def manifest_table(manifest: pd.DataFrame, num_classes: int | None,
                   images: pd.DataFrame | None) -> pd.DataFrame:
    """The manifest plus the derived columns the manifest suite checks."""
    table = manifest.copy()
    if num_classes is not None:
        names = canonical_class_names(num_classes)
        label_ok = table["label"].isin([str(i) for i in range(num_classes)])
        pair = table["label"] + ":" + table["label_name"]
        table["_label_pair"] = pair.where(label_ok & table["label_name"].notna())
        expected = {str(i): name for i, name in enumerate(names)}
        table["_expected_label_name"] = table["label"].map(expected)
    table["_width"] = pd.to_numeric(table["width"], errors="coerce")
    table["_height"] = pd.to_numeric(table["height"], errors="coerce")
    table["_leak"] = _leak_column(table)
    if images is not None:
        table = pd.concat([table, images], axis=1)
        checked = table["_image_problem"] == IMAGE_OK
        matches = (table["_image_width"] == table["_width"]) & (table["_image_height"] == table["_height"])
        table["_size_matches"] = pd.Series(np.where(checked, matches, None), index=table.index, dtype=object)
    return table


def _leak_column(table: pd.DataFrame) -> pd.Series:
    """True on every row whose sha256 occurs both in train and in val or test."""
    sha = table["sha256"]
    known = sha.notna()
    train = set(sha[known & (table["split"] == "train")])
    evaluation = set(sha[known & table["split"].isin(["val", "test"])])
    leaked = train & evaluation
    return known & sha.isin(leaked)


def class_count_table(manifest: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """Rows per (split, class) for every required split present in the manifest, zeros included."""
    names = canonical_class_names(num_classes)
    labels = pd.to_numeric(manifest["label"], errors="coerce")
    known = labels.isin(range(num_classes))
    present = [split for split in SPLITS if (manifest["split"] == split).any()]
    counts = (manifest[known].assign(_label=labels[known].astype(int))
              .groupby(["split", "_label"]).size())
    rows = [{"split": split, "label": index, "class_name": name, "count": int(counts.get((split, index), 0))}
            for split in present for index, name in enumerate(names)]
    return pd.DataFrame(rows, columns=["split", "label", "class_name", "count"])


def facts_table(manifest_rows: int, rejected: RejectedCounts, num_inputs: int | None,
                class_counts: pd.DataFrame | None) -> pd.DataFrame:
    """One row: rejected share over the inputs, and the train max/min class-count ratio."""
    inputs = num_inputs if num_inputs is not None else manifest_rows + rejected.errors + rejected.dropped
    share = rejected.errors / inputs if inputs > 0 else (1.0 if rejected.errors else 0.0)
    ratio = np.nan
    if class_counts is not None:
        train = class_counts.loc[(class_counts["split"] == "train") & (class_counts["count"] > 0), "count"]
        if len(train):
            ratio = float(train.max()) / float(train.min())
    return pd.DataFrame({"rejected_share": [share], "error_rows": [rejected.errors], "num_inputs": [inputs],
                         "train_imbalance_ratio": [ratio]})


# ---------------------------------------------------------------------------------------------------
# checks


def _unexpected_lines(result: dict[str, Any]) -> list[int]:
    """Manifest lines of the failing rows; GX gives [{_line: [..all..]}] with exclude_unexpected_values."""
    lines: list[int] = []
    for item in result.get("partial_unexpected_index_list") or []:
        value = item.get(LINE) if isinstance(item, dict) else item
        lines.extend(int(v) for v in (value if isinstance(value, list) else [value]))
        if len(lines) >= MAX_EXAMPLES:
            break
    return lines


def _row_describer(table: pd.DataFrame, problem: str, columns: tuple[str, ...],
                   ok: str) -> Callable[[dict[str, Any], bool], tuple[str, list[dict[str, Any]]]]:
    """Message + examples for a per-row manifest check, looked up by manifest line."""
    lines = table[LINE].to_numpy()

    def describe(result: dict[str, Any], success: bool) -> tuple[str, list[dict[str, Any]]]:
        if success:
            return ok, []
        count = int(result.get("unexpected_count", 0))
        picked = _unexpected_lines(result)[:MAX_EXAMPLES]
        positions = np.searchsorted(lines, picked)
        shown = [LINE, *columns]
        examples = [{_public(col): plain(table.iloc[pos][col]) for col in shown} for pos in positions]
        text = "; ".join(_format_example(example) for example in examples)
        return f"{count} row(s) of manifest.csv {problem}: {text}", examples

    return describe


def manifest_checks(table: pd.DataFrame, config: ValidateConfig, num_classes: int | None,
                    check_images: bool) -> list[Check]:
    """The per-row expectations on the manifest (what each one means is in its message)."""
    import great_expectations.expectations as gxe

    checks: list[Check] = []

    def add(name: str, expectation: Any, problem: str, columns: tuple[str, ...], ok: str,
            severity: str = CRITICAL) -> None:
        expectation.meta = {"check": name}
        expectation.severity = severity
        checks.append(Check(name, severity, "manifest", expectation, _row_describer(table, problem, columns, ok)))

    for column in MANIFEST_COLUMNS:
        add(f"not_null.{column}", gxe.ExpectColumnValuesToNotBeNull(column=column),
            f"have an empty {column}", ("path", column), f"no empty {column}")
    if num_classes is not None:
        allowed = [str(i) for i in range(num_classes)]
        names = canonical_class_names(num_classes)
        add("label_known", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=allowed),
            f"have a label outside 0..{num_classes - 1}", ("path", "label"),
            f"every label is in 0..{num_classes - 1}")
        add("label_name_matches",
            gxe.ExpectColumnValuesToBeInSet(column="_label_pair",
                                            value_set=[f"{i}:{name}" for i, name in enumerate(names)]),
            "have a label_name that is not the canonical name of their label",
            ("path", "label", "label_name", "_expected_label_name"),
            "every label_name is the canonical name of its label")
    add("split_known", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        "have a split other than train|val|test", ("path", "split"), "every split is train, val or test")
    add("path_unique", gxe.ExpectColumnValuesToBeUnique(column="path"),
        "share their path with another row", ("path",), "every path is listed once")
    add("path_inside_dataset",
        gxe.ExpectColumnValuesToNotMatchRegex(column="path", regex=r"^(?:/|\\|[A-Za-z]:)|(?:^|[/\\])\.\.(?:[/\\]|$)"),
        "have a path that is absolute or leaves the dataset folder", ("path",),
        "every path is relative and inside the dataset folder")
    add("sha256_format", gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
        "have a sha256 that is not 64 lowercase hex digits", ("path", "sha256"), "every sha256 is well formed")
    for side in ("width", "height"):
        add(f"{side}_integer", gxe.ExpectColumnValuesToMatchRegex(column=side, regex=r"^[0-9]+$"),
            f"have a {side} that is not a whole number", ("path", side), f"every {side} is a whole number")
        add(f"image_{side}_in_bounds",
            gxe.ExpectColumnValuesToBeBetween(column=f"_{side}", min_value=config.min_image_side,
                                              max_value=config.max_image_side),
            f"have a {side} outside {config.min_image_side}..{config.max_image_side} px "
            "(validate.min_image_side..max_image_side)", ("path", side),
            f"every {side} is within {config.min_image_side}..{config.max_image_side} px")
    add("no_train_eval_leakage", gxe.ExpectColumnValuesToBeInSet(column="_leak", value_set=[False]),
        "hold an image (same sha256) that is both in train and in val/test", ("path", "split", "sha256"),
        "no image is both in train and in val/test")
    if check_images:
        add("image_exists", gxe.ExpectColumnValuesToNotBeInSet(column="_image_problem", value_set=[IMAGE_MISSING]),
            "list an image file that does not exist", ("path",), "every listed image file exists")
        add("image_readable",
            gxe.ExpectColumnValuesToNotBeInSet(column="_image_problem", value_set=[IMAGE_UNREADABLE]),
            "list a file whose image header cannot be read", ("path", "_image_error"),
            "every image header is readable")
        add("image_size_matches", gxe.ExpectColumnValuesToBeInSet(column="_size_matches", value_set=[True]),
            "list a width/height that differs from the image file's own size",
            ("path", "width", "height", "_image_width", "_image_height"),
            "every image file has the width/height the manifest says")
    return checks


def splits_present_check() -> Check:
    import great_expectations.expectations as gxe

    def describe(result: dict[str, Any], success: bool) -> tuple[str, list[dict[str, Any]]]:
        if success:
            return "train, val and test splits are all present", []
        reported = {str(value) for value in result.get("partial_missing_list") or []}
        missing = [split for split in SPLITS if split in reported]
        return (f"split(s) missing from manifest.csv: {', '.join(missing)} (train, val and test are all "
                "required; ingest carves val from train when a format has none)",
                [{"missing_split": name} for name in missing])

    expectation = gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS),
                                                            meta={"check": "splits_present"})
    return Check("splits_present", CRITICAL, "manifest", expectation, describe)


def class_count_checks(config: ValidateConfig) -> list[Check]:
    import great_expectations.expectations as gxe

    def describer(problem: str, ok: str):
        def describe(result: dict[str, Any], success: bool) -> tuple[str, list[dict[str, Any]]]:
            if success:
                return ok, []
            examples = [{"split": item["split"], "class_name": item["class_name"], "count": plain(item["count"])}
                        for item in (result.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]]
            text = ", ".join(f"{e['class_name']} in {e['split']} ({e['count']})" for e in examples)
            return f"{int(result.get('unexpected_count', 0))} (split, class) pair(s) {problem}: {text}", examples
        return describe

    present = gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1, meta={"check": "class_in_every_split"})
    tiny = gxe.ExpectColumnValuesToBeBetween(column="count", min_value=config.tiny_class_warn,
                                             meta={"check": "tiny_class"}, severity=WARNING)
    return [
        Check("class_in_every_split", CRITICAL, "class_counts", present,
              describer("have no images", "every class has images in every split")),
        Check("tiny_class", WARNING, "class_counts", tiny,
              describer(f"have fewer than {config.tiny_class_warn} images (validate.tiny_class_warn)",
                        f"every class has at least {config.tiny_class_warn} images in every split")),
    ]


def facts_checks(config: ValidateConfig, facts: pd.DataFrame, rejected: RejectedCounts,
                 class_counts: pd.DataFrame | None) -> list[Check]:
    import great_expectations.expectations as gxe

    row = facts.iloc[0]
    share, errors, inputs = float(row["rejected_share"]), int(row["error_rows"]), int(row["num_inputs"])

    def rejected_describe(result: dict[str, Any], success: bool) -> tuple[str, list[dict[str, Any]]]:
        where = "" if rejected.present else " (no rejected.csv)"
        text = (f"{errors} of {inputs} inputs rejected with an error ({share:.4%}){where}; limit "
                f"{config.max_rejected_share:.4%} (validate.max_rejected_share)")
        if success:
            return text, []
        return f"too many inputs rejected: {text}", [{k: plain(v) for k, v in e.items()} for e in rejected.examples]

    def imbalance_describe(result: dict[str, Any], success: bool) -> tuple[str, list[dict[str, Any]]]:
        ratio = row["train_imbalance_ratio"]
        if class_counts is None or pd.isna(ratio):
            return "imbalance not measured (no train class counts)", []
        train = class_counts[(class_counts["split"] == "train") & (class_counts["count"] > 0)]
        largest, smallest = train.loc[train["count"].idxmax()], train.loc[train["count"].idxmin()]
        text = (f"train imbalance ratio {ratio:.1f} (largest {largest['class_name']} {largest['count']}, "
                f"smallest {smallest['class_name']} {smallest['count']}); warn above "
                f"{config.imbalance_warn_ratio} (validate.imbalance_warn_ratio)")
        examples = [] if success else [{"class_name": r["class_name"], "count": int(r["count"])}
                                       for r in (largest, smallest)]
        return text, examples

    share_expectation = gxe.ExpectColumnValuesToBeBetween(column="rejected_share", min_value=0.0,
                                                          max_value=config.max_rejected_share,
                                                          meta={"check": "rejected_share"})
    imbalance = gxe.ExpectColumnValuesToBeBetween(column="train_imbalance_ratio",
                                                  max_value=config.imbalance_warn_ratio,
                                                  meta={"check": "class_imbalance"}, severity=WARNING)
    return [Check("rejected_share", CRITICAL, "facts", share_expectation, rejected_describe),
            Check("class_imbalance", WARNING, "facts", imbalance, imbalance_describe)]


# ---------------------------------------------------------------------------------------------------
# running


def run_checks(tables: dict[str, pd.DataFrame], checks: list[Check],
               data_docs_dir: str | Path | None = None) -> tuple[list[CheckResult], dict]:
    """Run each table's expectations as one GX ValidationDefinition; map results back to our checks.
    With `data_docs_dir`, Great Expectations' own Data Docs (its static site of suites and validation
    results, index.html) are built there too."""
    quiet_third_parties()  # GX reads GX_ANALYTICS_ENABLED at import; callers need not remember it
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(name="fer_prepared_dataset")
    index_columns = {"manifest": [LINE], "class_counts": ["split", "class_name"], "facts": []}
    if "manifest" in tables:
        # GX builds its unexpected-row list with one DataFrame.at per failing row and column (minutes for
        # 150k bad rows) unless the index is named and values are excluded: then it is one list of lines.
        tables = {**tables, "manifest": tables["manifest"].set_index(LINE)}
    by_name = {check.name: check for check in checks}
    results: list[CheckResult] = []
    statistics: dict[str, Any] = {}
    for asset_name, table in tables.items():
        asset_checks = [check for check in checks if check.asset == asset_name]
        if not asset_checks:
            continue
        batch_definition = source.add_dataframe_asset(name=asset_name).add_batch_definition_whole_dataframe(
            f"{asset_name}_all")
        suite = context.suites.add(gx.ExpectationSuite(
            name=f"fer_{asset_name}", expectations=[check.expectation for check in asset_checks]))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"fer_{asset_name}", data=batch_definition, suite=suite))
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
        if index_columns[asset_name]:
            result_format["unexpected_index_column_names"] = index_columns[asset_name]
        if asset_name == "manifest":
            result_format["exclude_unexpected_values"] = True  # examples are looked up by line instead
        outcome = definition.run(batch_parameters={"dataframe": table}, result_format=result_format)
        statistics[asset_name] = {key: plain(value) for key, value in outcome.statistics.items()}
        for item in outcome.results:
            check = by_name[item.expectation_config.meta["check"]]
            if item.exception_info and item.exception_info.get("raised_exception"):
                message = f"Great Expectations could not evaluate it: {item.exception_info.get('exception_message')}"
                results.append(CheckResult(check.name, check.severity, False, message, []))
                continue
            message, examples = check.describe(item.result or {}, bool(item.success))
            results.append(CheckResult(check.name, check.severity, bool(item.success), message, examples))
    order = {check.name: position for position, check in enumerate(checks)}
    results.sort(key=lambda result: order[result.name])
    if data_docs_dir is not None:
        context.add_data_docs_site(site_name="fer", site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
        })
        context.build_data_docs(site_names=["fer"])
    return results, statistics


def python_check(name: str, success: bool, message: str, examples: list[dict[str, Any]] | None = None,
                 severity: str = CRITICAL) -> CheckResult:
    """A check about the dataset's files themselves, decided before any table exists."""
    return CheckResult(name, severity, success, message, examples or [])


