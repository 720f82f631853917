"""What a person sees while the pipeline runs locally (`make run`, `fer pipeline run`).

The Kubeflow local runner streams everything each task's subprocess writes (its executor input and
output JSON, the component's logs, progress-bar refreshes as separate lines) to stdout: a thousand
lines and more. `StepConsole` sits in stdout's place while the pipeline runs and

- writes every line, ANSI codes removed, to a log file (progress-bar refreshes left out);
- shows one line per finished (or cached) task with its duration and the figures the component reported (lines
  it prints as `[fer] ...`), the training's per-epoch metrics as they come (`epoch 3/12: ...`), and on
  a terminal a live progress line that is overwritten in place;
- on a failed task, shows that task's last lines and the log file's path;
- with `verbose`, passes everything through as the runner wrote it (ANSI only on a terminal).
"""

from __future__ import annotations

import collections
import contextlib
import io
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO

from components.kfp_io import REPORT   # what components print for people (kfp_io.announce)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KFP_EXECUTOR = re.compile(r"^\[KFP Executor [^\]]*\]:\s*")
LOCAL_RUNNER = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - ")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
CACHED = re.compile(r"Task (\S+) cache hit")   # KFP's local cache served the task's earlier outputs
PROGRESS = re.compile(r"\d+%\|.*\||\d+it \[|it/s\]|s/it\]")   # tqdm refreshes
EPOCH = re.compile(r"^epoch \d+/\d+: ")
TAIL_LINES = 30


class StepConsole(io.TextIOBase):
    """A text stream that files everything and shows a person one line per pipeline step."""

    def __init__(self, terminal: TextIO, log: TextIO, *, verbose: bool = False) -> None:
        self.terminal, self.log, self.verbose = terminal, log, verbose
        self.tty = bool(getattr(terminal, "isatty", lambda: False)())
        encoding = (getattr(terminal, "encoding", None) or "").lower()
        self.ok_mark, self.fail_mark = ("✓", "✗") if "utf" in encoding else ("ok", "FAILED")
        self._buffer = ""
        self._live_shown = False
        self._task: str | None = None
        self._task_started = 0.0
        self._reports: list[str] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.finished: list[tuple[str, str, float]] = []   # (task, status, seconds)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def close_live(self) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._clear_live()
        self.flush()

    # --------------------------------------------------------------------------------------------
    def _style(self, text: str, **style) -> str:
        if not self.tty:
            return text
        import click

        return click.style(text, **style)

    def _clear_live(self) -> None:
        if self._live_shown:
            self.terminal.write("\r\x1b[2K")
            self._live_shown = False

    def _live(self, text: str) -> None:
        if not self.tty:
            return
        width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
        self.terminal.write("\r\x1b[2K" + text[:width])
        self.terminal.flush()
        self._live_shown = True

    def _show(self, text: str) -> None:
        self._clear_live()
        self.terminal.write(text + "\n")
        self.terminal.flush()

    def _line(self, raw: str) -> None:
        plain = ANSI.sub("", raw)
        if PROGRESS.search(plain):
            if self.verbose:
                self._live(plain.strip())
            elif self._task:
                self._live(f"  ... {self._task}: {plain.strip()}")
            return
        self.log.write(plain + "\n")
        if self.verbose:
            self._show(raw if self.tty else plain)
            return
        message = LOCAL_RUNNER.sub("", KFP_EXECUTOR.sub("", plain.strip())).strip()
        started = STARTED.search(message)
        if started:
            self._task, self._task_started = started.group(1), time.monotonic()
            self._reports, self._tail = [], collections.deque(maxlen=TAIL_LINES)
            self._live(f"  ... {self._task}")
            return
        finished = FINISHED.search(message)
        if finished:
            self._finish(finished.group(1), finished.group(2))
            return
        cached = CACHED.search(message)
        if cached:
            self.finished.append((cached.group(1), "CACHED", 0.0))
            mark = self._style("↺" if self.ok_mark == "✓" else "cached", fg="cyan", bold=True)
            self._show(f"  {mark} {cached.group(1):<16} {0.0:6.1f} s  its inputs are unchanged: the earlier "
                       "outputs, from the cache")
            self._task = None
            return
        if not message:
            return
        self._tail.append(plain)
        if message.startswith(REPORT):
            self._reports.append(message[len(REPORT):])
        elif EPOCH.match(message):
            self._show(f"      {message}")
            if self._task:
                self._live(f"  ... {self._task}")

    def _finish(self, task: str, status: str) -> None:
        seconds = time.monotonic() - self._task_started if self._task == task else 0.0
        self.finished.append((task, status, seconds))
        ok = status == "SUCCESS"
        mark = self._style(self.ok_mark if ok else self.fail_mark, fg="green" if ok else "red", bold=True)
        first, *rest = self._reports or [""]
        self._show(f"  {mark} {task:<16} {seconds:6.1f} s  {first}".rstrip())
        for line in rest:
            self._show(f"      {line}")
        if not ok:
            self._show(f"    last lines of {task}:")
            for line in self._tail:
                self._show(f"    | {line}")
        self._task = None


def new_log_path(kind: str) -> Path:
    from fer_core.home import fer_home

    folder = fer_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.log"


@contextlib.contextmanager
def step_console(log_path: Path, *, verbose: bool = False, terminal: TextIO | None = None) -> Iterator[StepConsole]:
    """stdout replaced by a StepConsole for the block (showing on `terminal`, default the real
    stdout); the log file is kept whatever happens."""
    with open(log_path, "a", encoding="utf-8") as log:
        console = StepConsole(terminal or sys.stdout, log, verbose=verbose)
        try:
            with contextlib.redirect_stdout(console):
                yield console
        finally:
            try:
                console.close_live()
            except OSError:  # a closed pipe (`| head`) must not hide what the block raised
                pass
