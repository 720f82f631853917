"""fer_cli/console.py: what a person sees of a local pipeline run, and what goes to the log file."""

from __future__ import annotations

import io

from fer_cli.console import StepConsole

RUNNER_OUTPUT = (
    "12:00:00.000 - INFO - Executing task \x1b[96m'train'\x1b[0m\n"
    "12:00:00.001 - INFO - Streamed logs:\n\n"
    "    [KFP Executor 2026-12-02 12:00:00,100 INFO]: Got executor_input:\n"
    '    {"inputs": {"parameterValues": {"train_config": {"epochs": 2}}}}\n'
    "    epoch 1:  50%|#####     | 26/52 [00:07<00:07,  3.4it/s, loss=1.9]\r"
    "    epoch 1: 100%|##########| 52/52 [00:15<00:00,  3.4it/s, loss=1.7]\r\n"
    "    [KFP Executor 2026-12-02 12:00:20,000 INFO]: epoch 1/2: train loss 1.7 acc 0.4 | val loss 1.5 acc 0.5 mca 0.4 * (20.0s)\n"
    "    [fer] best epoch 1: val accuracy 0.500, mean class accuracy 0.400\n"
    "12:00:30.000 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
    "12:00:30.001 - INFO - Executing task 'evaluate'\n"
    "    Traceback (most recent call last):\n"
    "    RuntimeError: the split 'test' is empty\n"
    "12:00:31.000 - ERROR - Task 'evaluate' finished with status FAILURE\n"
)


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _run(tty: bool, verbose: bool = False) -> tuple[str, str, StepConsole]:
    terminal, log = FakeTerminal(tty), io.StringIO()
    console = StepConsole(terminal, log, verbose=verbose)
    for start in range(0, len(RUNNER_OUTPUT), 37):  # written in arbitrary pieces, as a pipe delivers them
        console.write(RUNNER_OUTPUT[start:start + 37])
    console.close_live()
    return terminal.getvalue(), log.getvalue(), console


def test_a_pipe_gets_one_line_per_step_the_epochs_and_a_failures_tail_without_ansi():
    shown, log, console = _run(tty=False)
    assert "\x1b" not in shown and "\r" not in shown
    lines = shown.splitlines()
    assert lines[0] == "      epoch 1/2: train loss 1.7 acc 0.4 | val loss 1.5 acc 0.5 mca 0.4 * (20.0s)"
    assert lines[1].split()[:2] in (["ok", "train"], ["✓", "train"])
    assert lines[1].endswith("best epoch 1: val accuracy 0.500, mean class accuracy 0.400")
    assert lines[2].split()[:2] in (["FAILED", "evaluate"], ["✗", "evaluate"])
    assert "RuntimeError: the split 'test' is empty" in shown
    assert "executor_input" not in shown and "parameterValues" not in shown
    assert [(task, status) for task, status, _ in console.finished] == [("train", "SUCCESS"), ("evaluate", "FAILURE")]
    # the log keeps every line but the progress refreshes, without colour codes
    assert "parameterValues" in log and "\x1b" not in log and "it/s" not in log


def test_a_terminal_gets_a_live_progress_line_redrawn_in_place():
    shown, _, _ = _run(tty=True)
    assert "\r\x1b[2K  ... train: epoch 1:  50%" in shown        # redrawn, not a new line
    # a progress refresh is always overwritten by the next carriage return, never ended by a newline
    assert all("\n" not in segment for segment in shown.split("\r") if "it/s" in segment)


def test_verbose_shows_everything_the_runner_wrote():
    shown, log, _ = _run(tty=False, verbose=True)
    assert "parameterValues" in shown and "Executing task 'train'" in shown and "\x1b" not in shown
    assert len(shown.splitlines()) >= len(log.splitlines()) - 1
