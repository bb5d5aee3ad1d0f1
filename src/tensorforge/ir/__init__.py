"""Graph IR: dtypes, typed values, nodes, graphs, printer and verifier."""

from .dtype import DType
from .graph import Dim, Graph, Node, Shape, TensorType, Value, toposort
from .printer import format_graph, format_node

__all__ = ["DType", "Dim", "Graph", "Node", "Shape", "TensorType", "Value", "format_graph", "format_node", "toposort"]
