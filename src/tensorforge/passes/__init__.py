"""Graph-to-graph passes and the pass manager."""

from .manager import PASSES, PassManager, register_pass
from .pipeline import PIPELINES, pipeline_for
from .specialize import specialize

__all__ = ["PASSES", "PIPELINES", "PassManager", "pipeline_for", "register_pass", "specialize"]
