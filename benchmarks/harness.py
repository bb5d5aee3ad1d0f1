"""The benchmark harness lives in the package (tensorforge.benchutil) so that `tensorforge bench` shares it."""

from tensorforge.benchutil import _calibrate, compare, fmt_time, markdown_table, ort_session  # noqa: F401
