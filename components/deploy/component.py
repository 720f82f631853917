"""deploy: the champion as a TorchServe .mar in the model store, hot-swapped into a running server."""

from kfp.dsl import Model, Output

from components.base import fer_component


@fer_component()
def deploy(registry_config: dict, serve_config: dict, mlflow_tracking_uri: str, s3_endpoint_url: str,
           model_store: str, torchserve_management_url: str, torchserve_key_file: str, torchserve_deployment: str,
           mar: Output[Model]) -> str:
    """Package models:/NAME@champion (NAME: registry_config's model_name); publish to MODEL_STORE; with a
    management URL, load it there without downtime (token from TORCHSERVE_MANAGEMENT_TOKEN or the
    server's key file); with a Deployment name instead (the cluster), roll that Deployment onto the new
    store. Returns where the .mar went. (The pipeline runs this step only for a new champion and when
    `deploy_model` is on.)"""
    from components.kfp_io import announce, step_config, use_endpoints
    from fer_core.steps import deploy_step

    use_endpoints(s3_endpoint_url=s3_endpoint_url, mlflow_tracking_uri=mlflow_tracking_uri)
    config = step_config(registry=registry_config, serve=serve_config)
    result = deploy_step(f"models:/{config.registry.model_name}@champion", config, out_dir=mar.path,
                         tracking_uri=mlflow_tracking_uri or None, model_store=model_store,
                         management_url=torchserve_management_url,
                         key_file=torchserve_key_file if torchserve_management_url else "",
                         k8s_deployment=torchserve_deployment)
    mar.metadata.update({"model_version": result["model_version"], "published": result["published"],
                         "deployed": result["deployed"]})
    announce(f"champion version {result['model_version']} -> {result['published']}"
             + (" (loaded in TorchServe)" if result["deployed"] else ""))
    return result["published"]
