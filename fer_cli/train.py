"""`fer train` and `fer evaluate`."""

from __future__ import annotations

import logging

import click

from fer_cli.common import config_options, fail, with_shortcuts


def _log_to_console() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--epochs", type=int, default=None, help="Shortcut for --set train.epochs=N.")
@click.option("--image-size", type=int, default=None, help="Shortcut for --set train.image_size=N.")
@click.option("--no-resume", is_flag=True, default=False,
              help="Start over even if RUN/checkpoints/last.pt exists (default: resume from it).")
@click.option("--weights", "weights_file", type=click.Path(dir_okay=False), default=None,
              help="Class weights from this weights.json (`fer data weights`); default: computed from the "
                   "train split with the weights.* settings.")
@click.option("--experiment", default=None,
              help="Log the run to this MLflow experiment (default: `fer` when MLFLOW_TRACKING_URI is set, "
                   "else no tracking).")
@config_options
def train(data_dir, run_dir, epochs, image_size, no_resume, weights_file, experiment, config) -> None:
    """Train the CBAM-ResNet with uncertainty mixing and the class-weighted loss.

    Selects the best epoch on the val split (mean class accuracy) and writes RUN/best.pt,
    model.safetensors (what serving loads), model.pt2 (torch.export program), meta.json, history.json,
    config.json, weights.json and checkpoints/last.pt. Rerunning the same
    command after an interruption resumes where the last checkpoint left off. For several processes,
    use `torchrun --nproc-per-node N -m fer_core.training.torchrun` with the same options.
    """
    from mlflow.exceptions import MlflowException

    from fer_core.data.images import ImageDecodeError
    from fer_core.steps import train_step
    from fer_core.training.engine import BEST_METRIC

    config = with_shortcuts(config, {"train.epochs": epochs, "train.image_size": image_size})
    _log_to_console()
    try:
        # the pipeline's train step; tracked when MLFLOW_TRACKING_URI is set or --experiment given
        result, run_id = train_step(data_dir, run_dir, config, experiment=experiment or "", weights_file=weights_file,
                                    resume=not no_resume, tags={"fer.orchestrator": "cli"})
        if run_id:
            from fer_core import tracking

            tracking.client().set_terminated(run_id, "FINISHED")  # the pipeline's evaluate/register would
    except (FileNotFoundError, ValueError, ImageDecodeError, RuntimeError, ArithmeticError, OSError,
            MlflowException) as exc:  # a tracking server that refuses says so, without a traceback
        fail(str(exc))
    click.echo(f"best epoch {result.best_epoch} of {result.epochs_completed}"
               f"{' (stopped early)' if result.stopped_early else ''}: "
               + ", ".join(f"{key} {value:.4f}" for key, value in result.best_metrics.items()))
    click.echo(f"{BEST_METRIC} {result.best_metrics[BEST_METRIC]:.4f}; run folder {result.run_dir}")
    if run_id:
        click.echo(f"MLflow run {run_id} (experiment {experiment or 'fer'})")


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder from fer train.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Prepared dataset folder.")
@click.option("--split", default=None, type=click.Choice(["train", "val", "test"]),
              help="The split to score. [evaluate.split]")
@click.option("--truth", "truth_csv", type=click.Path(dir_okay=False), default=None,
              help="synth_truth.csv for the noisy-label AUROC (default: DATA/synth_truth.csv when present).")
@config_options
def evaluate(run_dir, data_dir, split, truth_csv, config) -> None:
    """Evaluate a trained run: metrics.json, scores.json and plots in the run folder (the pipeline's
    evaluate step; with tracking on, also logged to the training's MLflow run)."""
    from mlflow.exceptions import MlflowException

    from fer_core.data.images import ImageDecodeError
    from fer_core.steps import evaluate_step

    _log_to_console()
    try:
        # the pipeline's evaluate step: with tracking on, logged to the run RUN/mlflow_run.json names
        metrics = evaluate_step(run_dir, data_dir, config, split=split, truth_csv=truth_csv)
    except (FileNotFoundError, ValueError, ImageDecodeError, RuntimeError, MlflowException) as exc:
        fail(str(exc))
    show = lambda value: "n/a" if value is None else f"{value:.4f}"  # noqa: E731
    click.echo(f"{metrics['split']}: {metrics['num_samples']} images")
    for key in ("accuracy", "mean_class_accuracy", "macro_f1", "ece"):
        click.echo(f"  {key:<20} {show(metrics[key])}")
    click.echo("  per-class recall: " + ", ".join(f"{name} {show(value)}"
                                                 for name, value in metrics["per_class_recall"].items()))
    stats = metrics["uncertainty"]
    click.echo(f"  uncertainty          correct {show(stats['mean_correct'])}, wrong {show(stats['mean_wrong'])}")
    if "noise" in metrics:
        click.echo(f"  noisy-label AUROC    {show(metrics['noise']['auroc'])} "
                   f"({metrics['noise']['num_flipped']} flipped of {metrics['noise']['num_matched']})")
    click.echo(f"metrics: {metrics['metrics_path']}")
