"""The student's fast GPU path: a compiled renderer replayed from one CUDA graph per batch size.

``Student.renderer(compile=..., overlap=True)`` is ``pose`` as a pure function (the batched evaluator
through torch.compile, the face network on a side stream); a CUDA graph of one call removes every
kernel launch but the replay's. On an H200: 0.33 ms a 512² frame at batch 1, 4,000–4,700 frames/s at
batch 8–256, fp16, 49–55 dB from the fp32 modules path (docs/benchmarks.md, "Issue 16, session 10").
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from kyara.pose import NUM_PARAMETERS

if TYPE_CHECKING:
    from kyara.student import Student


def capture_graph(render: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A function replaying one CUDA graph of render() (a call on static inputs) and returning its output
    tensor (the same tensor each time, overwritten by the next replay). Warmed up on a side stream first,
    as torch.cuda.graphs requires (compilation and cuBLAS workspaces happen there, not in the graph)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            render()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = render()

    def replay() -> torch.Tensor:
        graph.replay()
        return out
    return replay


class GraphedRenderer:
    """Frames of one student and one image for batches of `batch` poses, from one CUDA graph.

    image: (4, S, S) model space (the student's character); poses: (batch, 45). Calling it copies the
    poses into the graph's static input, replays, and returns (batch, 4, S, S) in the student's dtype (a
    new tensor). Built once (torch.compile: ~12 s for the first batch size on an H200, ~5 s for the next);
    the student's weights are those of when it was built. Off CUDA there is no graph: the renderer is
    called directly (compiled when asked), so the same code runs, slowly, anywhere.
    """

    def __init__(self, student: "Student", image: torch.Tensor, batch: int = 1, *, compile: str | None = "default",
                 overlap: bool = True):
        if batch < 1:
            raise ValueError(f"GraphedRenderer: batch must be >= 1, got {batch}")
        if image.shape != (4, student.size, student.size):
            raise ValueError(f"GraphedRenderer: image must be (4, {student.size}, {student.size}), got {tuple(image.shape)}")
        self.batch = batch
        self.device = student.device
        cuda = self.device.type == "cuda"
        self._render = student.renderer(compile=compile, overlap=overlap and cuda)
        with torch.inference_mode():
            self._image = image.to(self.device, student.dtype).clone()
            self._poses = torch.zeros(batch, NUM_PARAMETERS, device=self.device, dtype=student.dtype)
            call = lambda: self._render(self._image, self._poses)   # noqa: E731
            call()   # compiles here, on the current stream, as the measured benchmark did, before the capture
            self._replay = capture_graph(call) if cuda else call

    @torch.inference_mode()
    def __call__(self, poses: torch.Tensor) -> torch.Tensor:
        if poses.shape != (self.batch, NUM_PARAMETERS):
            raise ValueError(f"GraphedRenderer: poses must be ({self.batch}, {NUM_PARAMETERS}), got {tuple(poses.shape)}")
        self._poses.copy_(poses)
        return self._replay().clone()
