"""The export's worker process: the formats whose table row says ``in_worker`` convert there, beside the
formats the caller converts itself.

The pipeline hands it the function that converts (``convert``), so this module needs nothing of the
pipeline but its types, and the pipeline alone imports the other.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import Format
from edgecnn.models.checkpoint import load_checkpoint, save_checkpoint
from edgecnn.optimize import fold_batchnorm
from edgecnn.runtime.base import one_line_error

if TYPE_CHECKING:
    from edgecnn.export.pipeline import _Run, _Work

    # exports and runs formats of the work in the calling process, leaving the runs unverified (the
    # worker's caller verifies them against its reference); a module-level function (or a partial of one),
    # so it pickles by name into the spawned process
    Convert = Callable[[list[Format], _Work], list[_Run]]


class Worker:
    """``formats`` exported in a spawned process while the caller works. The model travels as a
    checkpoint (a module that went through tracing does not always pickle), the rest of the work (images
    included) as a file: what ``start()`` pipes to the new process must not fill the pipe, or the caller
    blocks until the worker has read it (after importing torch) and forever if it dies first. Leaving
    the block early (an error, Ctrl-C) interrupts the worker, so its atomic writes remove their
    temporary files."""

    def __init__(self, formats: list[Format], work: _Work, model: nn.Module, scratch: Path, convert: Convert) -> None:
        context = multiprocessing.get_context("spawn")
        self._results, self._sender = context.Pipe(duplex=False)
        checkpoint = save_checkpoint(scratch / "model.pt", model)
        job = scratch / "work.pickle"
        job.write_bytes(pickle.dumps((formats, dataclasses.replace(work, model=None))))
        self._names = ", ".join(fmt.name for fmt in formats)  # what its errors are about
        self._process = context.Process(target=_worker_main, args=(job, checkpoint, convert, self._names, self._sender))
        self._answered = False
        self._output = work.config.output

    def __enter__(self) -> Worker:
        self._process.start()
        self._sender.close()  # the worker holds the only sending end: if it dies, recv() ends with EOFError
        return self

    def result(self) -> list[_Run]:
        outcome = self._answer()
        self._answered = True  # not on Ctrl-C while waiting: then the worker is interrupted too
        if outcome is None:
            code = self._exit_code()
            # killed (out of memory, a signal), it could not remove what it was writing: atomic_path
            # names its temporary files after the writing process
            for leftover in self._output.glob(f".*.{self._process.pid}.tmp"):
                leftover.unlink(missing_ok=True)
            raise EdgeCNNError(f"the {self._names} worker process died (exit code {code})")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _answer(self) -> list[_Run] | BaseException | None:
        """What the worker sent, or None when it ended without sending."""
        try:
            answer = self._results.recv()
        except EOFError:
            return None
        return pickle.loads(answer.read_bytes()) if isinstance(answer, Path) else answer

    def _exit_code(self) -> int | None:
        self._process.join(timeout=5)
        return self._process.exitcode

    def __exit__(self, *exc_info: object) -> None:
        # a worker that answered is exiting on its own: interrupting its interpreter's shutdown
        # printed a KeyboardInterrupt traceback from PyTorch's exit hooks after a good export
        if not self._answered and self._process.is_alive():
            os.kill(self._process.pid, signal.SIGINT)  # type: ignore[arg-type]
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _worker_main(job: Path, checkpoint: Path, convert: Convert, names: str, results: Connection) -> None:
    """A worker process's share: fold the checkpoint's model, export and run, send where its runs are
    (or the error)."""
    try:
        torch.set_num_threads(1)  # the caller works on the other core
        formats, work = pickle.loads(job.read_bytes())
        work.model = fold_batchnorm(load_checkpoint(checkpoint).model)
        # the runs (logits included) go through a file too: sent whole, they would fill the pipe and keep
        # this process from ending until the caller reads them
        answer = job.with_name("runs.pickle")
        answer.write_bytes(pickle.dumps(convert(formats, work)))
        results.send(answer)
    except EdgeCNNError as exc:
        results.send(exc)
    except KeyboardInterrupt:
        pass  # the caller interrupted it and is not listening
    except Exception as exc:  # sent as one line: the converters' own exception types may not pickle
        results.send(one_line_error(f"{names} export failed ({type(exc).__name__})", exc))
    finally:
        results.close()
