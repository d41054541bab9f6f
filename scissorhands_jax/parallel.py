"""Mesh and sharding helpers: data-parallel Scissorhands through ``jax.jit`` placement.

Multi-device is a property of where the inputs live, not a second copy of the method.
Every step of the library is already a ``jax.jit`` program; when its batch is sharded
over the ``data`` axis of a :class:`jax.sharding.Mesh` and its parameters are
replicated (or sharded, when asked), XLA's SPMD partitioner runs the same program on
every device and inserts the all-reduces. Means over the batch, BatchNorm statistics
and the gradients are then those of the *global* batch, so N devices give the result of
one device on the same batch, up to the order of floating-point sums.

The mesh is placed once, where a run starts: put the parameters (and the model state)
on it with :func:`on_mesh`, and every loop of the library (:func:`scissorhands`,
:func:`trim`, :func:`repair`, :func:`connection_sensitivity`, :func:`forget_memory`,
the baselines, :func:`fit`) splits its batches over the mesh its parameters live on
(:func:`mesh_of`). No function of the method takes a mesh. In your own loop, place the
batches yourself with :func:`shard_batch` or :func:`sharded_source`.

Multi-host (``jax.distributed.initialize()`` once per process, before any other JAX
call): the mesh spans the devices of every process. :func:`shard_batch` builds each
global batch from the shards this process's devices hold (every process must see the
same global batch, as :func:`array_source` guarantees for the same key), and
:func:`from_process_local` assembles a global batch from per-process pieces when each
process reads its own part of the data. Write files and logs only where
:func:`is_main_process`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from scissorhands_jax._types import Batch, BatchSource, PRNGKey

DATA_AXIS = "data"
"""The default name of the mesh axis that batches are split over."""


def data_mesh(devices: Sequence[jax.Device] | None = None, *, axis: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    The axis type is ``Auto``: shardings are propagated by the compiler, so programs
    written for one device run unchanged.

    Args:
      devices: the devices, in mesh order; None for ``jax.devices()``.
      axis: the axis name.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(len(devices),)``.

    Raises:
      ValueError: if ``devices`` is empty.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: `devices` is empty; pass at least one device.")
    return Mesh(np.array(devices), (axis,), axis_types=(AxisType.Auto,))


def _batch_axis(mesh: Mesh, axis: str | None) -> str:
    if axis is None:
        return DATA_AXIS if DATA_AXIS in mesh.axis_names else mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {mesh.axis_names}.")
    return axis


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, axis: str | None = None) -> NamedSharding:
    """The sharding that splits the leading (example) axis over ``axis`` of ``mesh``
    (default: ``"data"`` if the mesh has it, else its first axis)."""
    return NamedSharding(mesh, PartitionSpec(_batch_axis(mesh, axis)))


def _on(leaf: Any, mesh: Mesh) -> bool:
    sharding = getattr(leaf, "sharding", None)
    return isinstance(sharding, NamedSharding) and sharding.mesh == mesh


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(leaf, jax.Array):
        return jax.device_put(leaf, sharding)
    # A host value: every process holds the same one, and each transfers only the
    # pieces its own devices need (this is what makes it work across processes).
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def shard_batch(batch: Batch, mesh: Mesh, *, axis: str | None = None) -> Batch:
    """Places a global batch with its leading axis split over the data axis of ``mesh``.

    A batch whose size is not a multiple of the axis size (typically the last, short
    batch of an epoch) is placed *replicated* instead: every device computes the whole
    batch, so the result is still exactly that of the global batch (no padding that would
    change a mean or a BatchNorm statistic, no dropped examples); only that batch loses
    the speed-up. Drop it with ``array_source(..., drop_last=True)`` if you prefer. Leaves
    already placed on ``mesh`` are kept as they are; 0-d leaves are replicated.

    Multi-host: every process passes the same global batch (NumPy); each transfers only
    the shards of its own devices.

    Args:
      batch: a pytree of arrays sharing the leading example axis.
      mesh: the mesh.
      axis: the mesh axis to split over (default: ``"data"`` or the first axis).

    Returns:
      The batch as global :class:`jax.Array` s on ``mesh``.
    """
    size = mesh.shape[_batch_axis(mesh, axis)]
    split, whole = batch_sharding(mesh, axis=axis), replicated(mesh)

    def place(leaf):
        if _on(leaf, mesh):
            return leaf
        shape = np.shape(leaf)
        even = len(shape) > 0 and shape[0] % size == 0
        return _put(leaf, split if even else whole)

    return jax.tree.map(place, batch)


def from_process_local(batch: Batch, mesh: Mesh, *, axis: str | None = None) -> Batch:
    """A global batch from this process's piece of it (multi-host data loading).

    When each process reads its own part of the data, process p passes its local batch
    of B_p examples and the global batch is their concatenation in process order
    (``jax.make_array_from_process_local_data``), split over the data axis. With one
    process this is :func:`shard_batch` of the same batch (the local size must then be a
    multiple of the axis size).

    Args:
      batch: this process's examples, a pytree of host arrays.
      mesh: the mesh spanning every process's devices.
      axis: the mesh axis to split over.

    Returns:
      The global batch as :class:`jax.Array` s.
    """
    sharding = batch_sharding(mesh, axis=axis)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def _fsdp_spec(shape: tuple[int, ...], size: int, axis: str, min_size: int) -> PartitionSpec:
    """Splits the largest dimension divisible by ``size``; replicated when none is, or
    when the leaf is small (a collective costs more than it saves)."""
    if size == 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % size == 0:
            return PartitionSpec(*(axis if i == d else None for i in range(len(shape))))
    return PartitionSpec()


def mesh_of(tree: Any) -> Mesh | None:
    """The mesh that ``tree`` (parameters, typically) was placed on, or None.

    The loops of the library call it on their parameters and split their batches over
    the mesh it returns, so placing the parameters with :func:`on_mesh` is all it takes
    to run data-parallel.

    Args:
      tree: any pytree.

    Returns:
      The mesh of the first leaf placed with a :class:`~jax.sharding.NamedSharding`;
      None when no leaf is (host values, arrays on one default device) and inside
      ``jax.jit`` (traced values have no placement of their own).
    """
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.core.Tracer):
            return None
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def on_mesh(tree: Any, mesh: Mesh, *, shard: bool = False, min_size: int = 1 << 14) -> Any:
    """Places parameters, model state or optimiser state on ``mesh``.

    By default every leaf is replicated. With ``shard=True`` each leaf of at least
    ``min_size`` entries is split along its largest dimension divisible by the data-axis
    size (fully sharded data parallelism: the compiler gathers a leaf where a step needs
    it whole); other leaves stay replicated. Leaves already on ``mesh`` keep their
    placement, so a placement chosen by the caller is respected.

    Args:
      tree: any pytree of arrays.
      mesh: the mesh.
      shard: shard large leaves over the data axis instead of replicating them.
      min_size: the smallest leaf that ``shard=True`` splits.

    Returns:
      The tree with every leaf a :class:`jax.Array` on ``mesh``.
    """
    axis = _batch_axis(mesh, None)
    size = mesh.shape[axis]

    def place(leaf):
        if _on(leaf, mesh):
            return leaf
        spec = _fsdp_spec(np.shape(leaf), size, axis, min_size) if shard else PartitionSpec()
        return _put(leaf, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


def place_like(tree: Any, like: Any) -> Any:
    """Places each leaf of ``tree`` where the leaf of ``like`` at the same position lives.

    For a tree shaped like the parameters (a mask of them, a copy): a leaf of the same
    shape as its reference takes the reference's sharding, so an FSDP-sharded parameter's
    mask is split the same way; a leaf of another shape (one flag per parameter leaf) is
    replicated on the reference's mesh. Leaves whose reference is on no mesh are kept.

    Args:
      tree: a pytree with the structure of ``like``.
      like: the reference tree, typically parameters placed with :func:`on_mesh`.

    Returns:
      ``tree`` with its leaves placed.

    Raises:
      ValueError: when the two trees have different structures.
    """
    if jax.tree.structure(tree) != jax.tree.structure(like):
        raise ValueError("place_like: `tree` must have the structure of `like`.")

    def place(leaf, ref):
        sharding = getattr(ref, "sharding", None)
        if not isinstance(sharding, NamedSharding):
            return leaf
        same = np.shape(leaf) == np.shape(ref)
        target = sharding if same else replicated(sharding.mesh)
        if getattr(leaf, "sharding", None) == target:
            return leaf
        return _put(leaf, target)

    return jax.tree.map(place, tree, like)


@dataclass(frozen=True)
class ShardedSource:
    """A :data:`BatchSource` whose batches are placed on a mesh (see :func:`shard_batch`).

    Attributes:
      source: the wrapped source (``key -> iterable of global batches``).
      mesh: the mesh.
      axis: the mesh axis the batches are split over (None: ``"data"`` or the first).
    """

    source: BatchSource
    mesh: Mesh
    axis: str | None = None

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch of the wrapped source, when it says."""
        return getattr(self.source, "num_batches", None)

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        for batch in self.source(key):
            yield shard_batch(batch, self.mesh, axis=self.axis)


def sharded_source(source: BatchSource, mesh: Mesh, *, axis: str | None = None) -> ShardedSource:
    """Wraps ``source`` so every batch it yields is placed with :func:`shard_batch`
    (a source already wrapped for the same mesh and axis is returned as it is)."""
    if isinstance(source, ShardedSource) and source.mesh == mesh and source.axis == axis:
        return source
    return ShardedSource(source, mesh, axis)


def local_batch_slice(
    global_size: int, *, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """The contiguous part of a global batch that one process feeds (multi-host input).

    Process p of P holds examples ``[p * B / P, (p + 1) * B / P)`` of a global batch of B,
    the order :func:`from_process_local` concatenates in.

    Args:
      global_size: B, the global batch size.
      process_index: p (default ``jax.process_index()``).
      process_count: P (default ``jax.process_count()``).

    Returns:
      A ``slice`` into the global batch.

    Raises:
      ValueError: if B is not a multiple of P, or p is not in ``0..P-1``.
    """
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count < 1 or not 0 <= p < count:
        raise ValueError(f"process_index must be in 0..{count - 1}, got {p}.")
    if global_size % count:
        raise ValueError(
            f"a global batch of {global_size} does not split over {count} processes; "
            f"use a batch size that is a multiple of {count}."
        )
    local = global_size // count
    return slice(p * local, (p + 1) * local)


def is_main_process() -> bool:
    """True on process 0: the one that writes checkpoints, result files and logs."""
    return jax.process_index() == 0


def resolve_mesh(devices: int | str | None = "auto") -> Mesh | None:
    """The data mesh a command runs on, from its ``--mesh`` value.

    Args:
      devices: ``"auto"`` (every device; None when there is only one), a device count N
        (the first N devices of ``jax.devices()``; 1 gives None), or None (one device).

    Returns:
      A one-axis :func:`data_mesh`, or None for one device: the programs then run
      exactly as they do without a mesh.

    Raises:
      ValueError: a count below 1, above the number of devices, or not a number.
    """
    available = jax.devices()
    if devices is None:
        return None
    if devices == "auto":
        count = len(available)
    else:
        try:
            count = int(devices)
        except (TypeError, ValueError):
            count = 0
        if str(count) != str(devices).strip() or not 1 <= count <= len(available):
            raise ValueError(
                f"--mesh must be 'auto' or a device count from 1 to {len(available)} (the "
                f"devices JAX sees: {jax.default_backend()}), got {devices!r}."
            )
    return None if count == 1 else data_mesh(available[:count])
