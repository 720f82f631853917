"""The compiled package: every step, the GPU request, node selector, toleration and secrets on the right
tasks, the project image everywhere, and nothing installed at run time."""

from __future__ import annotations

import ast
import re

import yaml
from click.testing import CliRunner

from fer_cli.main import cli
from fer_core import cluster
from pipelines.fer_pipeline import CACHING, RETRIES

STEPS = {"ingest", "validate", "stop-invalid-data", "class-weights", "train", "evaluate", "register", "deploy"}


def _compile(tmp_path):
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(out)])
    assert result.exit_code == 0, result.output
    pipeline_spec, platform_spec = list(yaml.safe_load_all(out.read_text()))
    return pipeline_spec, platform_spec


def _tasks(pipeline_spec):
    """Every task of the root DAG and of its condition sub-DAGs, by name."""
    tasks = dict(pipeline_spec["root"]["dag"]["tasks"])
    for component in pipeline_spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return {name: task for name, task in tasks.items() if not name.startswith("condition-")}


def test_every_step_is_in_the_package_in_dependency_order(tmp_path):
    pipeline_spec, _ = _compile(tmp_path)
    tasks = _tasks(pipeline_spec)
    assert set(tasks) == STEPS
    assert pipeline_spec["pipelineInfo"]["name"] == "fer-train-and-serve"
    for name, task in tasks.items():
        assert task["cachingOptions"].get("enableCache", False) is CACHING[name], name
        if name in RETRIES:
            assert task["retryPolicy"]["maxRetryCount"] == RETRIES[name]
    # train consumes what ingest, validate and class-weights produced (the first two reach it through
    # its condition's inputs), and evaluate/register consume train's model
    def sources(task):
        return {name: spec.get("componentInputArtifact") or spec["taskOutputArtifact"]["producerTask"]
                for name, spec in task["inputs"]["artifacts"].items()}

    assert sources(tasks["train"]) == {"dataset": "pipelinechannel--ingest-dataset",
                                       "validation_report": "pipelinechannel--validate-report_json",
                                       "weights": "class-weights"}
    assert sources(tasks["evaluate"])["model"] == "train" and sources(tasks["register"]) == {"model": "train"}
    assert sources(tasks["validate"]) == {"dataset": "ingest"}
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    for name in ("source", "data_format", "dvc_repo", "dvc_rev", "dvc_path", "source_fingerprint", "data_config",
                 "validate_config", "weights_config", "model_config", "train_config", "evaluate_config",
                 "registry_config", "serve_config", "mlflow_tracking_uri", "deploy_model"):
        assert name in params, name


def test_train_requests_a_gpu_on_gpu_nodes(tmp_path):
    pipeline_spec, platform_spec = _compile(tmp_path)
    executors = pipeline_spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == cluster.GPU_RESOURCE
    assert int(train["resources"]["accelerator"]["resourceCount"]) == 1
    assert train["image"] == cluster.COMPONENT_IMAGE_GPU
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {cluster.GPU_NODE_LABEL[0]: cluster.GPU_NODE_LABEL[1]}
    assert k8s["exec-train"]["tolerations"][0]["key"] == cluster.GPU_TOLERATION_KEY
    for name, executor in executors.items():
        if name != "exec-train":
            assert "accelerator" not in executor["container"].get("resources", {}), name
            assert name not in k8s or "nodeSelector" not in k8s[name], name


def test_secrets_labels_and_image_on_the_right_tasks(tmp_path):
    pipeline_spec, platform_spec = _compile(tmp_path)
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    def secrets(executor):
        return {entry["secretName"]: {item["envVar"] for item in entry["keyToEnv"]}
                for entry in k8s.get(executor, {}).get("secretAsEnv", [])}

    s3 = set(cluster.S3_SECRET_KEYS)
    assert secrets("exec-ingest") == {cluster.S3_SECRET: s3}
    for step in ("exec-train", "exec-evaluate", "exec-register"):
        assert secrets(step) == {cluster.S3_SECRET: s3, cluster.MLFLOW_SECRET: set(cluster.MLFLOW_SECRET_KEYS)}, step
    assert secrets("exec-deploy")[cluster.TORCHSERVE_TOKEN_SECRET] == {"TORCHSERVE_MANAGEMENT_TOKEN"}
    assert secrets("exec-validate") == {} and secrets("exec-class-weights") == {}
    for name, executor in pipeline_spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] in (cluster.COMPONENT_IMAGE, cluster.COMPONENT_IMAGE_GPU), name
        assert "pip install" not in " ".join(container["command"]), f"{name} installs packages at run time"
        assert k8s[name]["podMetadata"]["labels"] == {cluster.PIPELINE_POD_LABEL[0]: cluster.PIPELINE_POD_LABEL[1]}


def test_deploy_runs_only_for_a_new_champion_with_the_deploy_switch_on(tmp_path):
    """`--no-deploy` (deploy_model=False) leaves the deploy step out of the run, not a no-op step."""
    pipeline_spec, _ = _compile(tmp_path)
    conditions = []
    for component in pipeline_spec["components"].values():
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            condition = task.get("triggerPolicy", {}).get("condition", "")
            if condition:
                conditions.append((name, condition))
    assert any(name.startswith("condition-") and "deploy_model" in condition and "true" in condition
               for name, condition in conditions), conditions
    assert any("register-Output" in condition for _, condition in conditions), conditions


def test_compile_takes_the_config_options_as_the_package_defaults(tmp_path):
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(out), "--set", "train.epochs=5",
                                      "--set", "registry.floor=0.6"])
    assert result.exit_code == 0, result.output
    pipeline_spec, _ = list(yaml.safe_load_all(out.read_text()))
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_config"]["defaultValue"]["epochs"] == 5
    assert params["registry_config"]["defaultValue"]["floor"] == 0.6
    assert "model_name" not in params and "gate_floor" not in params  # one carrier: registry_config
    bad = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(out), "--set", "train.epochs=0"])
    assert bad.exit_code != 0 and "train.epochs" in bad.output


def test_every_pipeline_parameter_has_a_description(tmp_path):
    """The KFP UI shows these beside each input of a run."""
    import inspect

    from pipelines.fer_pipeline import fer_pipeline

    pipeline_spec, _ = _compile(tmp_path)
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    names = set(inspect.signature(fer_pipeline.pipeline_func).parameters)
    assert set(params) == names
    missing = [name for name, spec in params.items() if len(spec.get("description", "")) < 15]
    assert not missing, missing
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pipeline.md").read_text(encoding="utf-8")
    assert not [name for name in names if f"`{name}`" not in doc], "parameters missing from docs/pipeline.md"


def test_each_step_has_a_readable_display_name(tmp_path):
    from pipelines.fer_pipeline import DISPLAY_NAMES

    pipeline_spec, _ = _compile(tmp_path)
    shown = {name: task["taskInfo"]["name"] for name, task in _tasks(pipeline_spec).items()}
    assert shown == DISPLAY_NAMES and all(" " in value for value in shown.values())


def test_each_step_gets_only_the_config_sections_it_reads(tmp_path):
    """So KFP's cache key of a step changes only with what it reads: a new train.lr reruns train and
    evaluate, not ingest, validate or class weights."""
    from kfp import compiler

    from pipelines.fer_pipeline import fer_pipeline

    spec_path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(fer_pipeline, str(spec_path))
    pipeline_spec = list(yaml.safe_load_all(spec_path.read_text()))[0]
    components = pipeline_spec["components"]
    sections = {name.removeprefix("comp-"): {key for key in spec["inputDefinitions"].get("parameters", {})
                                             if key.endswith("_config")}
                for name, spec in components.items() if not name.startswith("comp-condition")}
    assert sections == {"ingest": {"data_config"}, "validate": {"validate_config"}, "stop-invalid-data": set(),
                        "class-weights": {"data_config", "weights_config"},
                        "train": {"data_config", "model_config", "train_config", "weights_config", "evaluate_config"},
                        "evaluate": {"train_config", "evaluate_config"}, "register": {"registry_config"},
                        "deploy": {"registry_config", "serve_config"}}, sections


def test_integer_settings_stay_integers_in_the_package(tmp_path):
    """KFP keeps a dict parameter as a protobuf Struct (doubles); the package still reads `epochs: 60`,
    its header too, and the defaults parse back to the same config."""
    from fer_core.config import from_dict, load_config

    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(cli, ["pipeline", "compile", "--out", str(out), "--set", "train.epochs=5"])
    assert result.exit_code == 0, result.output
    pipeline_spec, _ = list(yaml.safe_load_all(out.read_text()))
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    train = params["train_config"]["defaultValue"]
    assert train["epochs"] == 5 and type(train["epochs"]) is int
    assert type(train["batch_size"]) is int and type(train["lr"]) is float and train["deterministic"] is True
    assert type(params["serve_config"]["defaultValue"]["inference_port"]) is int
    header = out.read_text().split("components:", 1)[0]
    listed = {match.group(1): ast.literal_eval(match.group(2))
              for match in re.finditer(r"^#\s+(\w+_config): dict \[Default: (\{.*\})\]$", header, flags=re.M)}
    assert listed["train_config"] == train and set(listed) == {name for name in params if name.endswith("_config")}
    for name, listed_values in listed.items():           # the header's values have the package's types
        assert {key: type(value) for key, value in listed_values.items()} == \
            {key: type(value) for key, value in params[name]["defaultValue"].items()}, name
    sections = {name[: -len("_config")]: spec["defaultValue"] for name, spec in params.items()
                if name.endswith("_config")}
    expected = load_config().override(["train.epochs=5"])
    assert from_dict(sections).to_dict() == {**expected.to_dict(), "synth": from_dict({}).to_dict()["synth"]}
    # the rewritten package is still one KFP reads
    from kfp.components import load_component_from_file

    assert load_component_from_file(str(out)).name == "fer-train-and-serve"
