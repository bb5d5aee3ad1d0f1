"""The compiler: the staged pipeline from a model to an ``Artifact`` (``pipeline.py``), the compile cache
(``cache.py``), autotuning (``tuning.py``) and the entry points that hand artifacts to the runtime (``api.py``)."""

from .api import assembly, build_artifact, compile, compile_graph, compile_tiered, load
from .pipeline import STAGES, Build, Options, check_lowerable, needs_dynamic, optimize, to_graph
from .tuning import TuningError, tune

__all__ = ["STAGES", "Build", "Options", "assembly", "build_artifact", "check_lowerable", "compile", "compile_graph",
           "compile_tiered", "load", "needs_dynamic", "optimize", "to_graph", "TuningError", "tune"]  # fmt: skip
