"""Choosing a CUDA Python binding (export/cuda_bindings.py) without a GPU.

The selection logic is exercised with small binding classes that fail or start the way the real ones do
(ImportError when absent, TensorRTUnavailable/CudaError when the driver refuses); they stand in for the
choice only and run nothing on a GPU. The real bindings are tried as well: on a machine without a working
one the error must name each of them.
"""
from __future__ import annotations

import pytest

from export.cuda_bindings import (
    BINDINGS, CudaError, TensorRTUnavailable, binding_candidates, cuda_backend, gpu_info, select_cuda_binding,
)
from flownas.errors import UserInputError


def _binding(name: str, error: BaseException | None = None) -> type:
    """A binding class named `name` whose construction raises `error`, or succeeds when it is None."""
    def __init__(self) -> None:
        if error is not None:
            raise error

    return type(f"Binding_{name}", (), {"name": name, "__init__": __init__})


def test_first_binding_that_starts_is_chosen() -> None:
    first, second = _binding("a"), _binding("b")
    assert type(select_cuda_binding([first, second])) is first


def test_insufficient_driver_falls_back_to_the_next_binding() -> None:
    # A CUDA 13 binding on a driver older than 580 fails in cudaGetDeviceCount; pycuda may still work.
    refused = _binding("cuda-python", TensorRTUnavailable("cudaGetDeviceCount returned cudaErrorInsufficientDriver"))
    fallback = _binding("pycuda")
    assert type(select_cuda_binding([refused, fallback])) is fallback


@pytest.mark.parametrize("error", [CudaError("cuInit failed: no CUDA-capable device"), OSError("libcuda.so.1"),
                                   RuntimeError("cuda.pathfinder could not load libcudart")])
def test_driver_and_library_failures_fall_back(error: BaseException) -> None:
    assert type(select_cuda_binding([_binding("x", error), _binding("y")])).name == "y"


def test_all_failing_lists_every_reason_on_one_line() -> None:
    refused = _binding("cuda-python", TensorRTUnavailable("cudaGetDeviceCount returned cudaErrorInsufficientDriver\n"
                                                          "second line dropped"))
    absent = _binding("pycuda", ModuleNotFoundError("No module named 'pycuda'"))
    with pytest.raises(TensorRTUnavailable) as info:
        select_cuda_binding([refused, absent], skipped=["other: not tried"])
    message = str(info.value)
    assert "\n" not in message
    assert message.index("cuda-python: cudaGetDeviceCount returned cudaErrorInsufficientDriver") \
        < message.index("pycuda: not importable (No module named 'pycuda')") < message.index("other: not tried")


def test_bugs_in_a_binding_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        select_cuda_binding([_binding("buggy", KeyError("x")), _binding("fine")])


def test_candidates_by_preference_and_cuda_graph() -> None:
    assert list(BINDINGS) == ["cuda-python", "pycuda"]
    assert binding_candidates() == (["cuda-python", "pycuda"], [])
    assert binding_candidates("pycuda") == (["pycuda"], [])
    names, skipped = binding_candidates(cuda_graph=True)
    assert names == ["cuda-python"] and skipped == ["pycuda: not tried (no stream-capture API for cuda_graph=True)"]
    with pytest.raises(UserInputError, match="needs cuda-python"):
        binding_candidates("pycuda", cuda_graph=True)
    with pytest.raises(UserInputError, match="unknown CUDA binding"):
        binding_candidates("cupy")


def _working_binding() -> bool:
    try:
        cuda_backend().close()
    except TensorRTUnavailable:
        return False
    return True


@pytest.mark.skipif(_working_binding(), reason="a CUDA binding works here: the all-failing path cannot run")
def test_real_bindings_report_why_each_one_failed() -> None:
    with pytest.raises(TensorRTUnavailable) as info:
        cuda_backend()
    message = str(info.value)
    assert "\n" not in message and "cuda-python: " in message and "pycuda: " in message
    assert gpu_info() is None
