"""Files of the analysis networks: ``stem.safetensors`` holds the weights of one or more networks
(network k's tensors named ``k.<name>``), ``stem.json`` its settings and ``n_nets``; both written
atomically. Shared by :mod:`aurl.analysis.key_network` and :mod:`aurl.analysis.structure_network`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import torch

from aurl.atomic import atomic_write_bytes, atomic_write_text


def write_networks(stem: Path, nets: Sequence[torch.nn.Module], meta: dict) -> None:
    """``stem.safetensors`` with every network's weights, ``stem.json`` with ``meta``."""
    from safetensors.torch import save

    weights = {
        f"{k}.{name}": t.detach().contiguous()
        for k, net in enumerate(nets)
        for name, t in net.state_dict().items()
    }
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(weights))
    atomic_write_text(stem.with_suffix(".json"), json.dumps({**meta, "n_nets": len(nets)}) + "\n")


def read_networks(
    meta: dict, weights: bytes, build: Callable[[], torch.nn.Module]
) -> tuple[torch.nn.Module, ...]:
    """The ``meta["n_nets"]`` networks in ``weights``, each made by ``build`` and set to eval."""
    from safetensors.torch import load

    tensors = load(weights)
    nets = []
    for k in range(int(meta["n_nets"])):
        net = build()
        prefix = f"{k}."
        net.load_state_dict(
            {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
        )
        nets.append(net.eval())
    return tuple(nets)


def packaged(name: str) -> tuple[dict, bytes]:
    """The settings and weights shipped as ``aurl/analysis/data/<name>.{json,safetensors}``."""
    data = resources.files("aurl.analysis").joinpath("data")
    meta = json.loads((data / f"{name}.json").read_text())
    return meta, (data / f"{name}.safetensors").read_bytes()
