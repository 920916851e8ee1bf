"""Trajectory frames on Dask workers, and local Dask clusters (the ``distributed`` extra).

Two kinds of independent work spread over a ``dask.distributed.Client``:

- within a step, the packed batch of subclusters is cut into chunks, one task each:
  :class:`~ase_bodyorder.backends.dask.DaskBackend`, a backend below the calculator,
  what ``BodyOrderCalculator(..., client=client)`` uses;
- across a trajectory, whole frames, one task each (:func:`decompose_frames`, here).

This module sits above the calculator and nothing in the package below it imports it.
Frames are gathered in order, and every worker builds its calculator once
(docs/distributed.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

from .backends.dask import (
    TASKS_PER_THREAD,
    DaskBackend,
    ModelRecipe,
    check_client,
    connect,
    gather,
    match_worker_threads,
    model_for_workers,
    on_scheduler,
    require_distributed,
    worker_backend,
    worker_threads,
)
from .calculator import BodyOrderCalculator
from .decomposition import decompose
from .errors import DistributedError, InputError  # noqa: F401 (re-exported)

__all__ = ["DaskBackend", "DistributedError", "ModelRecipe", "check_client", "connect", "decompose_frames", "local_client"]

#: per worker process: calculators for whole frames, by (recipe or model id, settings)
_WORKER_CALCULATORS: dict = {}


# ----------------------------------------------------------------------------------
# trajectories: whole frames on the workers


def _decompose_on_worker(model, settings: tuple, atoms, full_model: bool):
    """Task: one frame's decomposition with this worker's calculator, built once."""
    key = (model if isinstance(model, ModelRecipe) else id(model), settings)
    calculator = _WORKER_CALCULATORS.get(key)
    if calculator is None:
        backend = worker_backend(model)
        calculator = _WORKER_CALCULATORS[key] = BodyOrderCalculator(backend, **dict(settings))
    match_worker_threads()
    return decompose(atoms, None, calculator.max_order, full_model=full_model, calculator=calculator)


def decompose_frames(
    frames: Sequence,
    calculator,
    *,
    full_model: bool = False,
    client=None,
    progress: bool = False,
) -> Iterator:
    """Decompose every frame with ``calculator``'s model and settings, yielding each
    :class:`~ase_bodyorder.Decomposition` in frame order as soon as it and every frame
    before it are done.

    Without ``client``, frame after frame here. With a ``dask.distributed.Client``,
    frames are tasks on its workers (each builds the calculator once); at most a few
    frames per worker thread are in flight. ``client`` defaults to the calculator's.
    """
    from tqdm.auto import tqdm

    client = calculator.client if client is None else check_client(client)
    bar = tqdm(total=len(frames), unit="frame", disable=not progress, file=sys.stderr)
    try:
        if client is None:
            for atoms in frames:
                result = decompose(atoms, None, calculator.max_order, full_model=full_model, calculator=calculator)
                bar.update()  # before the yield: the reader may stop after the last frame
                yield result
            return
        yield from _decompose_on_cluster(frames, calculator, full_model, client, bar)
    finally:
        bar.close()


def _decompose_on_cluster(frames, calculator, full_model: bool, client, bar) -> Iterator:
    distributed = require_distributed()

    backend = calculator.backend
    on_workers = backend.model_on_workers if isinstance(backend, DaskBackend) else (
        model_for_workers(client, calculator.model_source, backend, calculator.model_settings)
    )
    # the calculator's settings (max_order, cutoff, ...), hashable: the workers' cache key
    settings = tuple(sorted(((k, _frozen(v)) for k, v in calculator.parameters.items()), key=lambda kv: kv[0]))

    in_flight = TASKS_PER_THREAD * worker_threads(client) + 1
    pending: dict = {}  # future -> frame index
    done: dict[int, object] = {}
    queue = distributed.as_completed()
    next_to_yield = submitted = 0
    while next_to_yield < len(frames):
        while submitted < len(frames) and len(pending) < in_flight:
            with on_scheduler(client, f"sending frame {submitted}"):
                future = client.submit(
                    _decompose_on_worker, on_workers, settings, frames[submitted], full_model, pure=False
                )
            pending[future] = submitted
            queue.add(future)
            submitted += 1
        future = next(queue)
        index = pending.pop(future)
        done[index] = gather(client, [future], f"decomposing frame {index}")[0]
        bar.update()
        while next_to_yield in done:
            yield done.pop(next_to_yield)
            next_to_yield += 1


def _frozen(value):
    """Lists (fragments) as tuples, so that settings can key a cache."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


# ----------------------------------------------------------------------------------


def local_client(workers: int, threads_per_worker: int = 1, **cluster_options):
    """A ``dask.distributed.Client`` on a new ``LocalCluster`` of ``workers`` processes
    with ``threads_per_worker`` threads each; closing the client closes the cluster."""
    distributed = require_distributed()
    if workers < 1 or threads_per_worker < 1:
        raise InputError(f"workers and threads per worker must be >= 1, got {workers} and {threads_per_worker}")
    import dask

    # the dashboard on any free port: several local clusters must not fight for 8787
    cluster_options.setdefault("dashboard_address", ":0")
    # one task per worker thread at a time, the rest queued on the scheduler: with the
    # default (1.1, rounded up) a worker of one thread takes two chunks at once, and a
    # step of two chunks could run both on one worker while the other idles
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return distributed.Client(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True, **cluster_options
        )
