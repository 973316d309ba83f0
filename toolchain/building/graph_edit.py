"""In-place ONNX graph rewriting: initializer access, fresh names, producer/consumer maps.

Shared by the stages that rewrite a graph node by node (opset conversion, the lean passes), so each rewrite
rule reads as the pattern it changes.
"""
import numpy as np
import onnx
from onnx import numpy_helper


class GraphEdit:
    """Maps over ``model.graph`` as it was when created; rules add initializers and names through it."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model, self.graph = model, model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.names = ({n for node in self.graph.node for n in (*node.input, *node.output)} | set(self.inits)
                      | {n.name for n in self.graph.node})
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray | None:
        """The value of initializer ``name``, or None when it is not one."""
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def fresh(self, stem: str) -> str:
        """A tensor or node name not yet used in the graph, starting from ``stem``."""
        name, i = stem, 0
        while name in self.names:
            i += 1
            name = f"{stem}_{i}"
        self.names.add(name)
        return name

    def add_constant(self, stem: str, value: np.ndarray) -> str:
        """A new initializer holding ``value`` (initializers may be shared, so none is changed in place)."""
        name = self.fresh(stem)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def only_consumer(self, tensor: str):
        """The single node reading ``tensor`` (None when several do or it is a graph output)."""
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def remove(self, nodes) -> None:
        for node in nodes:
            self.graph.node.remove(node)
