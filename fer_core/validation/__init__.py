"""Great Expectations validation of a prepared dataset: `validate_dataset(data_dir, config.validate)`."""

from fer_core.validation.facts import ManifestNotFoundError, ManifestParseError
from fer_core.validation.suite import CheckResult
from fer_core.validation.validate import ValidationResult, validate_dataset

__all__ = ["CheckResult", "ManifestNotFoundError", "ManifestParseError", "ValidationResult", "validate_dataset"]
