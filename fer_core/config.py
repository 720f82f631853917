"""One typed config for every step, loaded from params.yaml (the same keys DVC tracks).

`load_config(path, overrides=["train.epochs=3", ...])` returns a frozen `Config`; `config.to_dict()`
is what gets written next to every output and logged to MLflow. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

DEFAULT_PARAMS = "params.yaml"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only true/false. YAML 1.1 (PyYAML's default) also
    reads on/off/yes/no as booleans, so `faces: off` would arrive as False; DVC writes params.yaml
    (`dvc exp run -S`) with a YAML 1.2 dumper, which leaves such words unquoted."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_yaml(text: Any) -> Any:
    """YAML text (or a stream) with YAML 1.2 booleans (see _Yaml12Loader)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 100            # storage size of prepared images (RAF-DB aligned faces are 100x100)
    val_fraction: float = 0.1        # stratified carve-out of train when a format has no validation split
    split_seed: int = 0
    num_classes: int = 7             # 7 or 8 (AffectNet-8 / FERPlus with contempt)
    workers: int = 0                 # ingest workers (<=2: threads for image files; else processes); 0 = per core
    max_pixels: int = 40_000_000     # refuse larger source images (decompression bombs)
    image_format: str = "auto"       # storage of prepared images: auto (the source's codec), png or jpeg
    png_compress_level: int = 0      # png storage: 0 = stored deflate (fastest, ~25 % larger), 1-9 = zlib
    # The face step (fer_core/data/faces.py, docs/faces.md); the same settings make the served crops.
    faces: str = "off"               # off: the images already are aligned faces (RAF-DB); detect: photos, the
                                     # largest face is aligned to the standard template and stored
    face_margin: float = 0.2         # the standard template shrunk around the crop centre by 1/(1 + margin)
    face_min_score: float = 0.5      # detector confidence below which a face is ignored
    face_detect_side: int = 640      # the detector sees a photo scaled down to this longer side
    face_template_sample: int = 256  # faces=off: aligned images the dataset's own template is measured on
                                     # (0 = use the standard template)


@dataclass(frozen=True)
class SynthConfig:
    scale: float = 1.0               # stratified fraction of the real RAF-DB list
    image_size: int = 100
    seed: int = 0
    noise: str = ""                  # "", "noise01", "noise02", "noise03" (real protocol files)
    noise_rate: float = 0.0          # or a random flip rate (used when noise is "")
    noise_kind: str = "uniform"      # flips at noise_rate: uniform (any other class) | confusable (its partner)


@dataclass(frozen=True)
class ValidateConfig:
    max_rejected_share: float = 0.001
    min_image_side: int = 16
    max_image_side: int = 4096
    imbalance_warn_ratio: float = 10.0
    tiny_class_warn: int = 20


@dataclass(frozen=True)
class WeightsConfig:
    scheme: str = "inverse"          # inverse | sqrt_inverse | effective_number | none
    beta: float = 0.999              # effective_number only
    max_weight: float | None = None  # optional clip


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet18"           # resnet18 | resnet50
    cbam: bool = True
    cbam_reduction: int = 16
    feature_dim: int = 64
    dropout: float = 0.4
    mixing: bool = True              # uncertainty feature mixing in the training step
    pretrained: str = ""             # local path or URI of backbone weights; "" = random init
    pretrained_key_map: str = ""     # "torchvision" or "" (identity)
    head_pool: int = 7               # uncertainty heads pool the final map to PxP (7 = RUL; 1 = global)
    logvar_bn: bool = True           # BN1d closing the logvar head (docs/method.md section 2; false: a variant)
    stem: str = "imagenet"           # imagenet (7x7/2 + maxpool, 224 px) | small (3x3/2, 48-64 px) | tiny (3x3/1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    image_size: int = 224
    lr: float = 2e-4                 # backbone and heads
    lr_fc: float = 2e-3              # classifier
    weight_decay: float = 1e-4
    lr_gamma: float = 0.9            # ExponentialLR per epoch
    seed: int = 0
    deterministic: bool = True
    workers: int = 2                 # DataLoader workers
    early_stopping_patience: int = 10
    mixing_warmup_epochs: int = 0    # epochs of the weighted loss on mu before mixing starts (0 = docs/method.md)
    mix_loss: str = "half"           # add-up loss: half (0.5/0.5, docs/method.md) | lam (RUL-style lam_i / 1 - lam_i)
    lr_logvar: float = 0.0           # the logvar head's own learning rate (0 = train.lr with the trunk)
    hflip: bool = True
    erasing_scale_min: float = 0.02
    erasing_scale_max: float = 0.25
    noise_std: float = 0.02          # mild gaussian noise on normalised inputs
    max_steps_per_epoch: int = 0     # 0 = full epoch (a cap for quick profiles)
    device: str = "auto"             # auto | cpu | cuda
    checkpoint_every_steps: int = 200  # also write checkpoints/last.pt every N steps (0 = per epoch only)
    cache_images_mb: int = 1024      # decode a split into RAM once when it fits in this many MiB (0 = off)
    # Speed only (the model's maths stays; a run may resume with other values):
    data_path: str = "auto"          # cpu: DataLoader workers augment; device: uint8 splits in device memory,
                                     # augmented per batch there; auto: device on CUDA when they fit device_cache_mb
    device_cache_mb: int = 8192      # the device path's budget for the uint8 train + val splits
    compile: bool = False            # torch.compile the backbone and the uncertainty heads
    compile_mode: str = "default"    # torch.compile mode
    compile_backend: str = "inductor"
    sync_every_steps: int = 20       # read the running loss/accuracy on the host every N steps (no sync in between)


@dataclass(frozen=True)
class EvaluateConfig:
    split: str = "test"
    ece_bins: int = 15
    batch_size: int = 128
    review_flagged: float = 0.2      # share of validation answers the served review rule flags (docs/serving.md)


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str = "fer-cbam-resnet"
    gate_metric: str = "val_mean_class_accuracy"
    # the champion must at least meet this: 0.5 val mean class accuracy is 3.5x chance (1/7) and far
    # below what a working model reaches (RAF-DB ~0.80, the synthetic CPU demo ~0.85), so a model that
    # did not learn is never served, while a weaker-than-usual but working one still is
    floor: float = 0.5


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "fer"
    address: str = "127.0.0.1"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070      # TorchServe's gRPC APIs (bound to `address` too)
    grpc_management_port: int = 7071
    # set when a model version is registered with a server (never frozen into the .mar): per environment
    batch_size: int = 8
    max_batch_delay_ms: int = 20
    workers: int = 1
    response_timeout_s: int = 120
    job_queue_size: int = 1000           # requests a model may queue before TorchServe answers 503
    max_image_pixels: int = 20_000_000
    max_request_bytes: int = 10_485_760
    token_expiration_min: int = 60   # lifetime of TorchServe's inference/management keys (minutes)
    torch_threads: int = 1           # intra-op threads per worker (0 = torch default); scale with workers
    faces: str = "auto"              # auto: answer every face found, the whole image when none; required: no
                                     # face is a 422; off: the whole image is one crop (no detection)
    max_faces: int = 8               # faces answered per image, largest first


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{'train.epochs': 60, ...}: the shape MLflow params and DVC params use."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items()
                for key, value in values.items()}

    def override(self, overrides: list[str] | dict[str, Any]) -> "Config":
        return _apply(self.to_dict(), overrides)


class ConfigError(ValueError):
    pass


_PORT = (1, 65535)
# Every setting's allowed values: (low, high) inclusive for numbers (None = unbounded), or a tuple of
# choices for strings. A key missing here has no constraint beyond its type (paths, names).
RANGES: dict[str, tuple[Any, ...]] = {
    "data.image_size": (16, 1024), "data.val_fraction": (0.0, 0.9), "data.split_seed": (0, None),
    "data.num_classes": (7, 8), "data.workers": (0, 256), "data.max_pixels": (1, 400_000_000),
    "data.image_format": ("auto", "png", "jpeg"), "data.png_compress_level": (0, 9),
    "data.faces": ("off", "detect"), "data.face_margin": (0.0, 2.0), "data.face_min_score": (0.05, 1.0),
    "data.face_detect_side": (32, 4096), "data.face_template_sample": (0, 100_000),
    "synth.scale": (1e-6, 1.0), "synth.image_size": (16, 1024), "synth.seed": (0, None),
    "synth.noise": ("", "noise01", "noise02", "noise03"), "synth.noise_rate": (0.0, 0.99),
    "synth.noise_kind": ("uniform", "confusable"),
    "validate.max_rejected_share": (0.0, 1.0), "validate.min_image_side": (1, 100_000),
    "validate.max_image_side": (1, 100_000), "validate.imbalance_warn_ratio": (1.0, None),
    "validate.tiny_class_warn": (0, None),
    "weights.scheme": ("inverse", "sqrt_inverse", "effective_number", "none"), "weights.beta": (0.0, 0.999999),
    "weights.max_weight": (1.0, None),
    "model.arch": ("resnet18", "resnet50"), "model.cbam_reduction": (1, 1024), "model.feature_dim": (1, 4096),
    "model.dropout": (0.0, 0.95), "model.pretrained_key_map": ("", "torchvision"), "model.head_pool": (1, 14),
    "model.stem": ("imagenet", "small", "tiny"),
    "train.epochs": (1, 10_000), "train.batch_size": (2, 65_536), "train.image_size": (16, 1024),
    # lr 0 freezes the weights (BN statistics still move)
    "train.lr": (0.0, 10.0), "train.lr_fc": (0.0, 10.0), "train.lr_logvar": (0.0, 10.0),
    "train.mix_loss": ("half", "lam"), "train.weight_decay": (0.0, 1.0),
    "train.lr_gamma": (0.01, 1.0), "train.seed": (0, None), "train.workers": (0, 256),
    "train.early_stopping_patience": (0, 10_000), "train.erasing_scale_min": (0.0, 1.0),
    "train.erasing_scale_max": (0.0, 1.0), "train.noise_std": (0.0, 10.0), "train.max_steps_per_epoch": (0, None),
    "train.device": ("auto", "cpu", "cuda"), "train.checkpoint_every_steps": (0, None),
    "train.cache_images_mb": (0, 1_048_576), "train.mixing_warmup_epochs": (0, 10_000),
    "train.data_path": ("auto", "cpu", "device"), "train.device_cache_mb": (0, 1_048_576),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "train.compile_backend": ("inductor", "aot_eager", "eager", "cudagraphs"), "train.sync_every_steps": (1, 100_000),
    "evaluate.split": ("train", "val", "test"), "evaluate.ece_bins": (2, 1000), "evaluate.batch_size": (1, 65_536),
    "evaluate.review_flagged": (0.01, 0.9),
    "registry.floor": (0.0, 1.0),
    "registry.gate_metric": ("val_mean_class_accuracy", "val_accuracy", "val_macro_f1"),
    "serve.inference_port": _PORT, "serve.management_port": _PORT, "serve.metrics_port": _PORT,
    "serve.grpc_inference_port": _PORT, "serve.grpc_management_port": _PORT, "serve.batch_size": (1, 1024),
    "serve.max_batch_delay_ms": (0, 60_000), "serve.workers": (1, 64), "serve.response_timeout_s": (1, 3600),
    "serve.job_queue_size": (1, 1_000_000), "serve.max_image_pixels": (1, 400_000_000),
    "serve.max_request_bytes": (1, 1 << 30), "serve.token_expiration_min": (1, 525_600),
    "serve.torch_threads": (0, 256), "serve.faces": ("auto", "required", "off"), "serve.max_faces": (1, 64),
}


def check_ranges(config: "Config") -> None:
    """Every setting within `RANGES`, and the few rules that tie two settings; ConfigError names the key,
    the value and what is allowed."""
    for key, value in config.flat().items():
        allowed = RANGES.get(key)
        if allowed is None or value is None:
            continue
        if isinstance(value, str):
            if value not in allowed:
                raise ConfigError(f"config key {key}: {value!r} is not one of "
                                  f"{', '.join(repr(choice) for choice in allowed)}")
            continue
        low, high = allowed
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
            raise ConfigError(f"config key {key}: {value!r} is out of range; it must be {bounds}")
    if config.train.erasing_scale_min > config.train.erasing_scale_max:
        raise ConfigError(f"config keys train.erasing_scale_min ({config.train.erasing_scale_min}) and "
                          f"train.erasing_scale_max ({config.train.erasing_scale_max}): min must not exceed max")
    if config.validate.min_image_side > config.validate.max_image_side:
        raise ConfigError("config keys validate.min_image_side and validate.max_image_side: min must not exceed max")
    ports = [(key, value) for key, value in config.flat().items() if key.startswith("serve.") and key.endswith("_port")]
    seen: dict[int, str] = {}
    for key, value in ports:
        if value in seen:
            raise ConfigError(f"config keys {seen[value]} and {key} both use port {value}; each needs its own")
        seen[value] = key


def _coerce(value: Any, hint: Any, key: str) -> Any:
    text = isinstance(value, str)
    allowed = getattr(hint, "__args__", None)
    if allowed and type(None) in allowed:  # Optional[X]
        if value is None or (text and value.lower() in ("none", "null", "")):
            return None
        hint = next(a for a in allowed if a is not type(None))
    try:
        if hint is bool:
            if text:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key}: {value!r} is not a valid {hint.__name__}") from None
    return value


def _apply(base: dict[str, Any], overrides: list[str] | dict[str, Any]) -> Config:
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            key, value = item.split("=", 1)
            items.append((key.strip(), load_yaml(value) if value.strip() else ""))
    merged = {section: dict(values) for section, values in base.items()}
    for key, value in items:
        if "." not in key:
            raise ConfigError(f"override key {key!r} must look like section.key")
        section, name = key.split(".", 1)
        if section not in merged:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; known: {', '.join(merged)}")
        if name not in merged[section]:
            raise ConfigError(f"unknown config key {key!r}; known in {section}: {', '.join(merged[section])}")
        merged[section][name] = value
    return from_dict(merged)


def from_dict(raw: dict[str, Any]) -> Config:
    sections = {}
    hints = get_type_hints(Config)
    for section, values in (raw or {}).items():
        if section not in hints:
            raise ConfigError(f"unknown config section {section!r}; known: {', '.join(hints)}")
        cls = hints[section]
        known = {f.name: f for f in fields(cls)}
        field_hints = get_type_hints(cls)
        kwargs = {}
        for key, value in (values or {}).items():
            if key not in known:
                raise ConfigError(f"unknown config key {section}.{key}; known: {', '.join(known)}")
            kwargs[key] = _coerce(value, field_hints[key], f"{section}.{key}")
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    check_ranges(config)
    return config


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load params.yaml (path, else $FER_PARAMS, else ./params.yaml if present, else defaults)."""
    if path is None:
        path = os.environ.get("FER_PARAMS") or (DEFAULT_PARAMS if Path(DEFAULT_PARAMS).exists() else None)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = load_yaml(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (UnicodeDecodeError, IsADirectoryError) as exc:
            raise ConfigError(f"config file {path} is not a UTF-8 text YAML file ({exc.__class__.__name__})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    config = from_dict(raw)
    return config.override(overrides) if overrides else config
