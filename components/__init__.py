"""Kubeflow Pipelines v2 components: one folder per pipeline step (component.py, README.md, tests/),
each a thin wrapper over its step function in `fer_core.steps`; `from components.ingest import ingest`.

base.py holds the decorator (the project image, `install_kfp_package=False`: nothing is pip-installed
at run time); kfp_io.py the run-time helpers the bodies import. Bodies import inside the function
because KFP ships each function's source on its own. This file imports nothing: a running component
imports `components.kfp_io`, and inside KFP's executor `kfp.dsl` has no decorators to build components.
"""
