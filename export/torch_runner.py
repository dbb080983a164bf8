"""PyTorch eager as a runner: any `nn.Module` (a whole flow model, one encoder block) with named inputs/outputs.

    runner = TorchRunner(block, inputs=[TensorSpec("x", (1, 64, 96, 128), np.float32)], outputs=["y"])
    runner = flow_model_runner(model, iters=12, height=384, width=512)   # image1, image2 -> flow

On CUDA, inputs go through page-locked host buffers into persistent device tensors, so a run has the same three
phases as a TensorRT engine (H2D, compute, D2H, timed with CUDA events); `cuda_graph=True` captures the forward
once and replays it, which removes Python and kernel-launch overhead as trtexec's default CUDA graphs do.
`threads` sets torch's (process-wide) intra-op thread count while active; the old value is restored.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np

from .inputs import TensorSpec, flow_input_specs
from .runners import Feeds, Runner, RunnerError

Call = Callable[..., Any]  # (module, *input_tensors) -> tensor | tuple of tensors | dict of tensors


class TorchRunner(Runner):
    """An `nn.Module` in eager PyTorch on the CPU or a CUDA GPU, fp32 (TF32 off on CUDA)."""

    def __init__(self, module: Any, *, inputs: Sequence[TensorSpec], outputs: Sequence[str], device: str = "cpu",
                 threads: int | None = None, precision: str = "fp32", cuda_graph: bool = False,
                 name: str | None = None, call: Call | None = None, details: dict[str, Any] | None = None) -> None:
        if device not in ("cpu", "cuda"):
            raise RunnerError(f"TorchRunner device must be 'cpu' or 'cuda', got {device!r}")
        if cuda_graph and device != "cuda":
            raise RunnerError("CUDA graphs need device='cuda' (backend torch-cuda)")
        if precision != "fp32":
            raise RunnerError(f"backend torch-{device} runs fp32 only; precision {precision!r} cannot be applied "
                              "(use an fp16 ONNX graph or a TensorRT engine)")
        super().__init__(name=name or type(module).__name__, device=device, precision=precision, threads=threads)
        self.backend = f"torch-{device}"
        self.has_device_clock = device == "cuda"
        self.module, self.cuda_graph = module, cuda_graph
        self._inputs, self._outputs = list(inputs), list(outputs)
        self._call: Call = call or (lambda m, *xs: m(*xs))
        self._details = dict(details or {})
        self._cuda: dict[str, Any] | None = None  # device buffers, events and graph, made on the first CUDA run

    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _activate(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RunnerError(f"backend torch-cuda: this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                              "install a CUDA build of torch or use torch-cpu")
        self._torch, self._saved_threads = torch, torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device == "cuda":  # fp32 means fp32: PyTorch lets cuDNN convolutions use TF32 by default
            self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        # A module elsewhere is copied, not moved (Module.to works in place): one module may back a torch-cpu
        # and a torch-cuda runner in the same comparison.
        first = next(self.module.parameters(), None)
        here = first is None or first.device.type == self.device
        self._net = (self.module if here else copy.deepcopy(self.module).to(self.device)).eval()

    def _deactivate(self) -> None:
        torch = self._torch
        torch.set_num_threads(self._saved_threads)
        self._net, self._cuda = None, None  # drops a device copy, device buffers and the graph's memory pool
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32
            torch.cuda.empty_cache()

    def _named(self, out: Any) -> dict[str, Any]:
        if isinstance(out, dict):
            return out
        values = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(values) != len(self._outputs):
            raise RuntimeError(f"{self.name} returned {len(values)} outputs, the runner names {self._outputs}")
        return dict(zip(self._outputs, values))

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self.device == "cuda":
            state = self._cuda_run(feeds, timed=False)
            return {k: v.numpy().copy() for k, v in state["host_out"].items()}
        tensors = [self._torch.from_numpy(np.ascontiguousarray(feeds[s.name], dtype=s.dtype)) for s in self._inputs]
        with self._torch.inference_mode():
            out = self._named(self._call(self._net, *tensors))
        return {k: v.numpy() for k, v in out.items()}  # fresh tensors: no copy needed

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        state = self._cuda_run(feeds, timed=True)
        return state["timing"]

    def _cuda_run(self, feeds: Feeds, timed: bool) -> dict[str, Any]:
        """Stage, copy in, compute, copy out, synchronise; with CUDA events between the phases."""
        arrays = [np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self._inputs]
        state = self._cuda_state(tuple(a.shape for a in arrays))
        for host, array in zip(state["host_in"], arrays):
            host.numpy()[...] = array  # host-side staging, outside the device-timed phases (as TrtRunner)
        start, copied_in, computed, copied_out = state["events"]
        start.record()
        for device, host in zip(state["dev_in"], state["host_in"]):
            device.copy_(host, non_blocking=True)
        copied_in.record()
        out = self._compute(state)
        computed.record()
        for name, host in state["host_out"].items():
            host.copy_(out[name], non_blocking=True)
        copied_out.record()
        copied_out.synchronize()
        if timed:
            h2d, compute, d2h = (a.elapsed_time(b) for a, b in ((start, copied_in), (copied_in, computed),
                                                               (computed, copied_out)))
            state["timing"] = {"latency_ms": start.elapsed_time(copied_out), "h2d_ms": h2d, "compute_ms": compute,
                               "d2h_ms": d2h}
        return state

    def _compute(self, state: dict[str, Any]) -> dict[str, Any]:
        if state["graph"] is not None:
            state["graph"].replay()
            return state["graph_out"]
        with self._torch.inference_mode():
            return self._named(self._call(self._net, *state["dev_in"]))

    def _cuda_state(self, shapes: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
        """Pinned host and device buffers for `shapes` (rebuilt when they change), events, graph."""
        if self._cuda is not None and self._cuda["shapes"] == shapes:
            return self._cuda
        torch = self._torch
        dtypes = [getattr(torch, np.dtype(s.dtype).name) for s in self._inputs]
        host_in = [torch.empty(shape, dtype=dt, pin_memory=True) for shape, dt in zip(shapes, dtypes)]
        dev_in = [torch.zeros(shape, dtype=dt, device="cuda") for shape, dt in zip(shapes, dtypes)]
        state = {"shapes": shapes, "host_in": host_in, "dev_in": dev_in, "graph": None, "graph_out": None,
                 "events": [torch.cuda.Event(enable_timing=True) for _ in range(4)]}
        if self.cuda_graph:
            state["graph"], state["graph_out"] = self._capture(dev_in)
        out = self._compute(state)  # also sizes the pinned output buffers
        state["host_out"] = {k: torch.empty(tuple(v.shape), dtype=v.dtype, pin_memory=True) for k, v in out.items()}
        torch.cuda.synchronize()
        self._cuda = state
        return state

    def _capture(self, dev_in: list[Any]) -> tuple[Any, Any]:
        """Capture one forward as a CUDA graph; warm-up runs on a side stream first, as PyTorch requires."""
        torch = self._torch
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    self._call(self._net, *dev_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                out = self._named(self._call(self._net, *dev_in))
        except RuntimeError as exc:  # host synchronisation or dynamic shapes inside the forward
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RunnerError(f"CUDA graph capture failed ({first}); run without --cuda-graph") from None
        return graph, out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(cuda_graph=self.cuda_graph, **self._details)
        if self._active:
            info["threads"] = self._torch.get_num_threads()
            if self.device == "cuda":
                info["gpu"] = self._torch.cuda.get_device_name()
                info["tf32"] = False
        return info

    def _versions(self) -> dict[str, str | None]:
        from flownas.provenance import library_version

        return {**super()._versions(), "torch": library_version("torch")}


def flow_model_runner(model: Any, iters: int = 12, *, height: int | None = None, width: int | None = None,
                      batch: int = 1, device: str = "cpu", threads: int | None = None, precision: str = "fp32",
                      cuda_graph: bool = False, name: str | None = None) -> TorchRunner:
    """A flow model's own forward (padding included) as a runner: `image1`, `image2` `[B,3,H,W]` -> `flow`."""
    if iters < 1:
        raise RunnerError(f"iterations must be at least 1, got {iters}")
    config = model.config()
    name = name or "-".join(str(v) for v in config.values() if isinstance(v, str))
    return TorchRunner(model, inputs=flow_input_specs(height, width, batch), outputs=["flow"], device=device,
                       threads=threads, precision=precision, cuda_graph=cuda_graph, name=name,
                       call=lambda m, image1, image2: m(image1, image2, iters=iters), details={"iters": iters})
