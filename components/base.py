"""The one decorator every component uses: the project image, no run-time installs (pipeline-definition
time only; the bodies' run-time helpers are in components/kfp_io.py)."""

from __future__ import annotations

import functools

from kfp import dsl

from fer_core.cluster import COMPONENT_IMAGE, COMPONENT_IMAGE_GPU

fer_component = functools.partial(dsl.component, base_image=COMPONENT_IMAGE, install_kfp_package=False)
fer_gpu_component = functools.partial(dsl.component, base_image=COMPONENT_IMAGE_GPU, install_kfp_package=False)
