"""Serving on TorchServe: handler (handler.py, inference.py), .mar packaging and publishing
(package.py), local server control (server.py, config.properties) and the REST/management client with
the no-downtime deploy (client.py). See docs/serving.md."""
