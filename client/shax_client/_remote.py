"""RemoteFunction and AsyncRemoteFunction: a traced function whose program lives on the server.

Both read the same ``Entry`` (program, wrt, server id, signature) and run the flows of
``_base.BaseClient``; they differ only in how they wait. Return conventions (as JAX's):

- ``rf(*args)``: one array if the function returns one value, else a tuple;
- ``rf.vjp(*args, cotangents=None) -> (outputs, gradients)``: gradients is always a tuple, one
  per differentiated input; cotangents default to 1.0 when every output is a float scalar;
- ``rf.grad(*args)`` / ``rf.value_and_grad(*args)``: one gradient when ``wrt`` was an int (or
  None with one float input), else a tuple;
- ``rf.jvp(args, tangents)``: tangents for the differentiated inputs; (outputs, output tangents).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shax_client._arrays import unpack
from shax_client._base import (
    Entry,
    Flow,
    MinimizeReader,
    MinimizeResult,
    complete,
    make_progress,
    minimize_options,
    minimize_x0,
)
from shax_core import Program

if TYPE_CHECKING:
    from shax_client._async import AsyncClient
    from shax_client._sync import Client


class _RemoteBase:
    def __init__(self, client, entry: Entry):
        self._client = client
        self._entry = entry

    @property
    def id(self) -> str | None:
        """The server's id for the program (a content hash); None until uploaded."""
        return self._entry.id

    @property
    def signature(self) -> dict:
        """The server's typed signature: ``inputs``, ``outputs``, ``gradients``, ``wrt``."""
        return self._entry.signature

    @property
    def program(self) -> Program | None:
        """The traced program, as uploaded (None when IR text was uploaded as is)."""
        return self._entry.program

    @property
    def wrt(self) -> tuple[int, ...] | None:
        return self._entry.wrt

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._entry.name} id={self.id}>"

    def _minimize_flow(self, x0, steps, lr, optimizer, every, hyper) -> tuple[Flow, list[Any]]:
        """The streamed minimize call (re-uploaded after a 404) and the start arguments."""
        client, entry = self._client, self._entry
        client._check_scalar(entry)
        args = minimize_x0(x0)
        options = minimize_options(steps, lr, optimizer, every, hyper)
        flow = client._with_reupload(entry, lambda: client._minimize_call(entry, args, options))
        return flow, args

    def _minimize_reader(self, steps: int, progress: bool) -> tuple[MinimizeReader, Any]:
        """A reader of the streamed steps, in the output's dtype, and its progress bar."""
        return MinimizeReader(self._entry.out_types[0].np_dtype), make_progress(steps, progress)

    def _progress_loop(self, reader: MinimizeReader, bar, line) -> None:
        step = reader.feed(line)
        if step is not None:
            bar.update(step.step - bar.n)
            bar.set_postfix(value=f"{step.value:.8g}")


def _grads(entry: Entry, grads):
    """Gradients in the arguments' trees: one when ``wrt`` was an int (or None with one
    differentiated input), else a tuple."""
    if not entry.in_trees:
        return unpack(grads, entry.grad_single)
    n = len(entry.in_trees)
    spec = entry.wrt_spec
    nums = tuple(range(n)) if spec is None else ((spec,) if isinstance(spec, int) else spec)
    trees = entry.per_argument([a % n for a in nums], grads)
    single = isinstance(spec, int) or (spec is None and len(trees) == 1)
    return trees[0] if single else tuple(trees)


class RemoteFunction(_RemoteBase):
    """A function compiled on the server, called synchronously (see the module docstring)."""

    _client: Client

    def __call__(self, *args):
        outputs = self._client._run(self._client._eval_flow(self._entry, args))
        return self._entry.outputs_tree(outputs)

    def vjp(self, *args, cotangents=None):
        outputs, grads = self._client._run(self._client._vjp_flow(self._entry, args, cotangents))
        return self._entry.outputs_tree(outputs), tuple(grads)

    def value_and_grad(self, *args):
        self._client._check_scalar(self._entry)
        outputs, grads = self._client._run(self._client._vjp_flow(self._entry, args, None))
        return outputs[0], _grads(self._entry, grads)

    def grad(self, *args):
        return self.value_and_grad(*args)[1]

    def jvp(self, args: Sequence[Any], tangents: Sequence[Any]):
        outs, touts = self._client._run(self._client._jvp_flow(self._entry, args, tangents))
        return unpack(outs, self._entry.single), unpack(touts, self._entry.single)

    def stages(self) -> dict[str, str]:
        """IR text of every stage (typed, rewritten, linearized, linear, transposed, vjp)."""
        return self._client._run(self._client._stages_flow(self._entry))

    def minimize(
        self,
        x0: Any,
        steps: int = 40,
        lr: float = 0.05,
        optimizer: str = "gd",
        progress: bool = True,
        every: int = 1,
        **hyper,
    ) -> MinimizeResult:
        """Gradient descent on the server next to the cached program, streamed back."""
        flow, args = self._minimize_flow(x0, steps, lr, optimizer, every, hyper)
        response = self._client._run(flow)
        reader, bar = self._minimize_reader(steps, progress)
        try:
            for line in response.iter_lines():
                self._progress_loop(reader, bar, line)
        finally:
            response.close()
            bar.close()
        return complete(reader.finish(), self._entry, args)


class AsyncRemoteFunction(_RemoteBase):
    """A function compiled on the server; every method is a coroutine."""

    _client: AsyncClient

    async def __call__(self, *args):
        outputs = await self._client._run(self._client._eval_flow(self._entry, args))
        return self._entry.outputs_tree(outputs)

    async def vjp(self, *args, cotangents=None):
        flow = self._client._vjp_flow(self._entry, args, cotangents)
        outputs, grads = await self._client._run(flow)
        return self._entry.outputs_tree(outputs), tuple(grads)

    async def value_and_grad(self, *args):
        self._client._check_scalar(self._entry)
        outputs, grads = await self._client._run(self._client._vjp_flow(self._entry, args, None))
        return outputs[0], _grads(self._entry, grads)

    async def grad(self, *args):
        return (await self.value_and_grad(*args))[1]

    async def jvp(self, args: Sequence[Any], tangents: Sequence[Any]):
        flow = self._client._jvp_flow(self._entry, args, tangents)
        outs, touts = await self._client._run(flow)
        return unpack(outs, self._entry.single), unpack(touts, self._entry.single)

    async def stages(self) -> dict[str, str]:
        return await self._client._run(self._client._stages_flow(self._entry))

    async def minimize(
        self,
        x0: Any,
        steps: int = 40,
        lr: float = 0.05,
        optimizer: str = "gd",
        progress: bool = True,
        every: int = 1,
        **hyper,
    ) -> MinimizeResult:
        flow, args = self._minimize_flow(x0, steps, lr, optimizer, every, hyper)
        response = await self._client._run(flow)
        reader, bar = self._minimize_reader(steps, progress)
        try:
            async for line in response.aiter_lines():
                self._progress_loop(reader, bar, line)
        finally:
            await response.aclose()
            bar.close()
        return complete(reader.finish(), self._entry, args)
