"""report.json (for machines and the pipeline) and report.html (for a person), written atomically."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from fer_core.io import atomic_write_text, write_json


def write_reports(report: dict[str, Any], report_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into report_dir; return their paths."""
    json_path, html_path = report_dir / "report.json", report_dir / "report.html"
    write_json(json_path, report)
    atomic_write_text(html_path, render_html(report))
    return json_path, html_path


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _examples_html(examples: list[dict[str, Any]]) -> str:
    if not examples:
        return ""
    columns = list(dict.fromkeys(key for example in examples for key in example))
    head = "".join(f"<th>{_cell(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(e.get(c))}</td>" for c in columns) + "</tr>" for e in examples)
    return f"<table class=ex><tr>{head}</tr>{rows}</table>"


def _counts_html(counts: dict[str, dict[str, int]]) -> str:
    if not counts:
        return "<p>No class counts (the manifest could not be read or has no known labels).</p>"
    classes = list(dict.fromkeys(name for per_split in counts.values() for name in per_split))
    head = "<th>split</th>" + "".join(f"<th>{_cell(name)}</th>" for name in classes) + "<th>total</th>"
    rows = "".join(
        f"<tr><td>{_cell(split)}</td>" + "".join(f"<td>{_cell(per.get(name, 0))}</td>" for name in classes)
        + f"<td>{_cell(sum(per.values()))}</td></tr>"
        for split, per in counts.items())
    return f"<table><tr>{head}</tr>{rows}</table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
tr.fail td.status{background:#f8d0d0} tr.warn td.status{background:#fbeec2} tr.pass td.status{background:#d6f0d6}
table.ex{font-size:.85em} .verdict{font-size:1.3em;font-weight:bold}
"""


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: verdict, summary, class counts, and every check with its examples."""
    summary = report.get("summary", {})
    verdict = "VALID" if report.get("success") else "INVALID"
    rows = []
    for check in report.get("checks", []):
        status = "pass" if check["success"] else ("fail" if check["severity"] == "critical" else "warn")
        rows.append(
            f"<tr class={status}><td>{_cell(check['name'])}</td><td>{_cell(check['severity'])}</td>"
            f"<td class=status>{status.upper()}</td><td>{_cell(check['message'])}"
            f"{_examples_html(check.get('examples', []))}</td></tr>")
    facts = {key: value for key, value in summary.items() if not isinstance(value, dict)}
    facts_rows = "".join(f"<tr><th>{_cell(k)}</th><td>{_cell(v)}</td></tr>" for k, v in facts.items())
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Validation: {_cell(report.get('data_dir'))}</title>
<style>{STYLE}</style></head><body>
<h1>Dataset validation</h1>
<p class=verdict>{verdict}: {_cell(summary.get('critical_failures', 0))} critical failure(s),
{_cell(summary.get('warnings', 0))} warning(s)</p>
<p>Dataset: <code>{_cell(report.get('data_dir'))}</code><br>Generated {_cell(report.get('generated_at'))}
with Great Expectations {_cell(report.get('great_expectations', {}).get('version'))}</p>
<h2>Summary</h2><table>{facts_rows}</table>
<h2>Images per split and class</h2>{_counts_html(summary.get('class_counts', {}))}
<h2>Checks</h2>
<table><tr><th>check</th><th>severity</th><th>status</th><th>message and examples</th></tr>
{''.join(rows)}</table>
<h2>Config</h2><pre>{_cell(json.dumps(report.get('config', {}), indent=2))}</pre>
</body></html>
"""


def failure_summary(report_dir: str | Path) -> str:
    """The failed critical checks of a validation report folder (report.json), one per line."""
    report_path = Path(report_dir) / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    failed = [check for check in report.get("checks", [])
              if not check.get("success") and check.get("severity") == "critical"]
    lines = [f"dataset {report.get('data_dir', '')} is invalid: {len(failed)} critical check(s) failed "
             f"(report: {report_path})"]
    for check in failed:
        examples = check.get("examples") or []
        shown = f" e.g. {examples[:3]}" if examples else ""
        lines.append(f"  - {check.get('name')}: {check.get('message')}{shown}")
    return "\n".join(lines)
