"""ingest: a raw dataset in a public format (folder, s3://, or DVC repo + rev) -> a prepared Dataset."""

from kfp.dsl import Dataset, Markdown, Output

from components.base import fer_component


@fer_component()
def ingest(source: str, data_format: str, dvc_repo: str, dvc_rev: str, dvc_path: str, source_fingerprint: str,
           data_config: dict, s3_endpoint_url: str, dataset: Output[Dataset], summary: Output[Markdown]) -> int:
    """Read the raw dataset and write the prepared dataset (fer_core.data.prepared: manifest.csv, images/,
    rejected.csv, dataset.json, data_version.json); returns the image count.

    `source_fingerprint` is not read: it is part of the step's cache key, so a changed local folder is
    ingested again rather than served from the cache (`fer pipeline run` sets it)."""
    from components.kfp_io import announce, ingest_markdown, step_config, use_endpoints
    from fer_core.steps import ingest_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url)
    result = ingest_step(dataset.path, step_config(data=data_config), source=source, fmt=data_format,
                         dvc_repo=dvc_repo, dvc_rev=dvc_rev, dvc_path=dvc_path)
    version = result["data_version"]
    dataset.metadata.update({"num_images": result["num_images"], "num_rejected": result["num_rejected"],
                             "manifest_sha256": version.get("manifest_sha256", ""),
                             "dvc_rev": version.get("dvc_rev", ""), "source": version.get("source", "")})
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(ingest_markdown(result))
    origin = f"DVC rev {version['dvc_rev'][:12]}" if version.get("dvc_rev") else version.get("source", "")
    announce(f"{result['num_images']} images, {result['num_rejected']} rejected; {origin}, manifest sha256 "
             f"{version.get('manifest_sha256', '')[:12]}")
    return int(result["num_images"])
