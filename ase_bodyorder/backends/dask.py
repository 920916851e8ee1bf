"""Subcluster batches on Dask workers: a backend that wraps another (the ``distributed``
extra).

Within a step, the packed batch of subclusters is cut into chunks, one task each
(:class:`DaskBackend`, what ``BodyOrderCalculator(..., client=client)`` uses). Each
worker loads the model once and keeps it (a per-process cache keyed by the model's
recipe: path or name and settings), so tasks carry only positions. A model that is an
object (an ASE calculator) is sent to every worker once with ``client.scatter``. Each
worker sets torch's threads to the threads Dask gave it. Results are gathered in
submission order; the calculator assembles them exactly as in the serial path
(docs/distributed.md).

Dask reruns the tasks of a worker that dies on the others, so a step survives a killed
worker with the serial result. A lost scheduler, or workers that keep dying (out of
memory), raise :class:`~ase_bodyorder.errors.DistributedError` with what to do.
Trajectories (whole frames on the workers) and local clusters are in
:mod:`ase_bodyorder.distributed`, above the calculator.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import DistributedError, InputError, MissingDependencyError
from .base import Backend, ClusterBatch

__all__ = [
    "DaskBackend",
    "ModelRecipe",
    "check_client",
    "connect",
    "require_distributed",
    "scheduler_address",
    "worker_backend",
]

#: chunks per worker thread in a step: more than one evens out chunks of unequal cost
TASKS_PER_THREAD = 2
#: smallest chunk worth a task (atoms): below it the scatter/gather overhead dominates
MIN_CHUNK_ATOMS = 256


def require_distributed():
    """The ``distributed`` module, or an error that names the extra to install."""
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError(
            "spreading work over workers needs Dask distributed: pip install 'ase-bodyorder[distributed]'"
        ) from None
    return distributed


# ----------------------------------------------------------------------------------
# what runs on the workers


@dataclass(frozen=True)
class ModelRecipe:
    """How a worker loads the model: everything :func:`~ase_bodyorder.backends.make_backend`
    needs, as plain (hashable) values. ``model`` is an absolute path or a known name."""

    model: str
    device: str | None = None
    variant: str | None = None
    extensions_directory: str | None = None
    dtype: str | None = None

    def load(self) -> Backend:
        from .select import make_backend

        return make_backend(
            self.model,
            self.device,
            variant=self.variant,
            extensions_directory=self.extensions_directory,
            dtype=self.dtype,
        )


#: per worker process: the backends loaded so far, by recipe

_WORKER_BACKENDS: dict[ModelRecipe, Backend] = {}


def match_worker_threads() -> None:
    """Torch's intra-op threads = the threads Dask gave this worker (only once torch is
    in use: the ASE-calculator path needs no torch)."""
    if "torch" not in sys.modules:
        return
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except ValueError:  # not on a worker (tests calling the task directly)
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


_MALLOC_RESTORED = False


def _restore_malloc() -> None:
    """Undo, in this worker process, the MALLOC_TRIM_THRESHOLD_=65536 that Dask's nanny
    sets for the workers it starts. With it glibc hands every large block back to the
    system at once and maps it again on the next call; a model's tensors are allocated
    and freed at every call, and the chunks ran 2.5 times slower (benchmarks/RESULTS.md).
    Thresholds as glibc's own dynamic ones at their largest (32 MiB)."""
    global _MALLOC_RESTORED
    if _MALLOC_RESTORED or not os.environ.get("MALLOC_TRIM_THRESHOLD_") or not sys.platform.startswith("linux"):
        return
    _MALLOC_RESTORED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)


def worker_backend(model) -> Backend:
    """The backend on this worker: a recipe is loaded once and kept; a scattered
    backend object is used as it is."""
    if isinstance(model, Backend):
        backend = model
    else:
        backend = _WORKER_BACKENDS.get(model)
        if backend is None:
            backend = _WORKER_BACKENDS[model] = model.load()
    _restore_malloc()
    match_worker_threads()
    return backend


def _out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "not enough memory" in text)
    )


def evaluate_chunk(model, chunk: ClusterBatch, forces: bool):
    """Task: energies (and forces) of one chunk of clusters on a worker."""
    backend = worker_backend(model)
    try:
        return backend.evaluate(chunk, forces)
    except Exception as error:
        if _out_of_memory(error):
            raise MemoryError(
                f"a worker ran out of memory on a chunk of {chunk.n_atoms} atoms "
                f"({chunk.n_clusters} subclusters): lower max_atoms_per_chunk, or give the workers more memory"
            ) from None
        raise


# ----------------------------------------------------------------------------------
# what runs on the client


@contextlib.contextmanager
def on_scheduler(client, what: str):
    """Calls to the scheduler while ``what``, with a lost scheduler explained. It can
    surface in any call (a gather, or asking for the workers' threads), as a closed
    connection even before the client notices; an exception raised by a task itself
    (a missing model file on a worker, say) comes through as it is."""
    distributed = require_distributed()
    try:
        yield
    except Exception as error:
        # once the client has noticed, the loss comes as whatever the call met: an
        # OSError (reconnection timed out), a RuntimeError (connection pool closed), ...
        if client.status == "running" and not isinstance(error, distributed.comm.CommClosedError):
            raise  # the task's own error (OSError: FileNotFoundError, PermissionError, ...)
        raise DistributedError(
            f"lost the Dask scheduler at {scheduler_address(client)} while {what} "
            f"({type(error).__name__}); start the scheduler again and rerun"
        ) from None


def gather(client, futures: list, what: str, chunk_atoms: int | None = None):
    """The futures' results in order, with the cluster's failures explained."""
    distributed = require_distributed()
    try:
        with on_scheduler(client, what):
            return client.gather(futures)
    except distributed.scheduler.KilledWorker as error:
        hint = (
            f"lower max_atoms_per_chunk (chunks now hold up to {chunk_atoms} atoms) or give the workers more memory"
            if chunk_atoms else "give the workers more memory"
        )
        raise DistributedError(
            f"Dask workers kept dying while {what} (the scheduler gave up on a task after "
            f"workers died running it; a worker over its memory limit is killed by its nanny): {hint}"
        ) from error
    except MemoryError as error:
        raise DistributedError(str(error)) from None


def check_client(client):
    """``client`` as a running ``dask.distributed.Client``: an address string is
    connected to; anything else is refused with what to pass instead."""
    distributed = require_distributed()
    if isinstance(client, str):
        return connect(client)
    if isinstance(client, distributed.deploy.Cluster):
        raise TypeError(
            f"client= takes a dask.distributed.Client, got a {type(client).__name__}: pass Client(cluster)"
        )
    if not isinstance(client, distributed.Client):
        raise TypeError(
            f"client= takes a dask.distributed.Client (or a scheduler address), got {type(client).__name__}"
        )
    if client.status != "running":
        raise InputError(f"this Dask client is {client.status}, not running: make a new one")
    _ADDRESSES[client] = client.scheduler.address
    return client


#: each checked client's scheduler address, kept for the messages after it is lost
#: (a client that gave up on its scheduler no longer holds it)
_ADDRESSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scheduler_address(client) -> str:
    """The address of ``client``'s scheduler, also once the scheduler is lost."""
    scheduler = getattr(client, "scheduler", None)
    return _ADDRESSES.get(client) or getattr(scheduler, "address", None) or "an unknown address"


def worker_threads(client) -> int:
    """Threads over all workers now in the cluster (at least 1)."""
    with on_scheduler(client, "asking for its workers"):
        return max(sum(client.nthreads().values()), 1)


def model_for_workers(client, model, backend: Backend, settings: dict):
    """What the tasks carry to name the model: a recipe (path or name), or the model
    object sent to every worker once."""
    from ase.calculators.calculator import BaseCalculator

    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if os.path.exists(text):
            text = os.path.abspath(text)  # workers may start elsewhere; shared file system
        return ModelRecipe(text, **settings)
    if isinstance(model, (Backend, BaseCalculator)):
        try:
            return client.scatter(backend, broadcast=True, hash=False)
        except Exception as error:
            what = "ASE calculator" if isinstance(model, BaseCalculator) else "backend"
            raise InputError(
                f"cannot send this {type(model).__name__} ({what}) to the Dask workers: it does not pickle "
                f"({type(error).__name__}: {error}); make it picklable, or use a model file or name, "
                "which each worker loads itself"
            ) from None
    raise InputError(
        f"a {type(model).__name__} cannot be sent to Dask workers: give the model as a file path "
        "(.pt, .pth) or a name, which each worker loads itself"
    )


class DaskBackend(Backend):
    """A backend whose packed batches run on Dask workers, chunk by chunk.

    ``local`` answers everything cheap on the client (species, cutoff, the locality
    probe, isolated atoms, the plain model); :meth:`evaluate_chunks` sends the chunks of
    a step to the workers and gathers them in order.
    """

    def __init__(self, local: Backend, client, model_on_workers):
        self.local = local
        self.client = client
        self.model_on_workers = model_on_workers
        for name in ("default_cutoff", "dtype", "packed", "gives_forces", "atomic_types", "display_name",
                     "preferred_chunk_atoms"):
            setattr(self, name, getattr(local, name))

    @classmethod
    def from_model(cls, client, model, local: Backend, **settings) -> "DaskBackend":
        """Wrap ``local`` (the client's copy of ``model``) for ``client``'s workers."""
        client = check_client(client)
        return cls(local, client, model_for_workers(client, model, local, settings))

    def check_species(self, numbers: np.ndarray) -> None:
        self.local.check_species(numbers)

    def evaluate(self, batch: ClusterBatch, forces: bool):
        # small batches (isolated atoms, the locality probe) are cheaper here
        return self.local.evaluate(batch, forces)

    def evaluate_full(self, atoms, forces: bool, stress: bool) -> dict:
        return self.local.evaluate_full(atoms, forces, stress)

    def chunk_atoms(self, n_atoms: int, max_atoms: int) -> int:
        """Chunks small enough that every worker thread gets about TASKS_PER_THREAD of
        them, never larger than ``max_atoms`` (memory), nor smaller than MIN_CHUNK_ATOMS."""
        share = math.ceil(n_atoms / (TASKS_PER_THREAD * worker_threads(self.client)))
        return max(min(max_atoms, share), min(MIN_CHUNK_ATOMS, max_atoms))

    def evaluate_chunks(self, chunks: list[ClusterBatch], forces: bool) -> list:
        what = f"evaluating {len(chunks)} chunk{'s' if len(chunks) != 1 else ''} of subclusters"
        with on_scheduler(self.client, what):
            futures = self.client.map(
                evaluate_chunk, [self.model_on_workers] * len(chunks), chunks, [forces] * len(chunks), pure=False
            )
        return gather(self.client, futures, what, max((c.n_atoms for c in chunks), default=0))

    def describe(self) -> dict:
        info = dict(self.local.describe())
        info["dask_scheduler"] = scheduler_address(self.client)
        return info


def connect(address: str, timeout: float = 10.0):
    """A ``dask.distributed.Client`` joined to the running scheduler at ``address``."""
    import threading

    distributed = require_distributed()
    outcome: dict = {}

    def attempt():
        try:
            outcome["client"] = distributed.Client(address, timeout=timeout)
        except BaseException as error:  # reported below
            outcome["error"] = error

    # Client() can hang past its timeout on a port where something else answers (the
    # dashboard's 8787): wait in a thread, with a bound of our own
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "client" in outcome:
        return outcome["client"]
    error = outcome.get("error")
    if error is None:
        reason = "no answer: is it a Dask scheduler's address? (the dashboard's port, 8787, is not)"
    else:
        reason = f"{type(error).__name__}: {error}"
    raise OSError(f"cannot reach a Dask scheduler at {address} within {timeout:g} s ({reason})")
