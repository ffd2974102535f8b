"""Optical-flow methods behind one registry; see :mod:`flowstore.flow.registry`."""
from .registry import (
    FlowEstimator, available_methods, build_flow, list_engines, list_methods, register_flow, resolve_engine,
)

__all__ = ["FlowEstimator", "available_methods", "build_flow", "list_engines", "list_methods", "register_flow",
           "resolve_engine"]
