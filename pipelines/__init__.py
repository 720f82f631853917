"""The Kubeflow pipeline: the DAG (fer_pipeline.py), compiling, running locally, submitting (runner.py)."""
