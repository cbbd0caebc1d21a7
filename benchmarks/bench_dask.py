"""Dask scale-out (issue 8): labels and basins of a 512^3 float32 volume on a LocalCluster of
2 worker processes with a per-worker memory limit far below what the in-memory call needs.

The volume (a smooth field plus noise: ~10^5 basins at 512^3, like a noisy CT) is written
chunk by chunk to a Zarr store in a temporary directory; the Dask runs read it from there and
write their results back to Zarr (``dask.array.from_zarr`` -> numvox.dask -> ``to_zarr``),
as the CLI's ``--dask`` path does.  The baselines are the in-memory calls on the volume held
in memory (pure compute: no reading or writing).  Each Dask row's note gives the peak
resident memory of each worker process (its kernel's high-water mark, ``VmHWM``, reset
before each run) and whether any worker was restarted (killed for memory).
"""

import os
import shutil
import tempfile

import numpy as np

from ._harness import Baseline, Case

SECTION = "Dask scale-out"

LIMITS = {"labels": "448MiB", "basins": "640MiB"}  # per worker process, whole process


def _generate(block_info=None):
    loc = block_info[None]["array-location"]
    i, j, k = (np.arange(a, b, dtype=np.float64) for a, b in loc)
    i, j, k = i[:, None, None], j[None, :, None], k[None, None, :]
    v = np.sin(i / 11.0) + np.cos(j / 13.0) * np.sin(k / 17.0) + 0.5 * np.sin((i + j + k) / 29.0)
    seed = [int(a) for a, _ in loc]
    noise = np.random.default_rng(seed).standard_normal(v.shape, dtype=np.float32)
    return (v + 0.02 * noise).astype(np.float32)


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM)
        f.write("5")
    return os.getpid()


def _peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class _Run:
    """One Dask computation on the cluster, with per-worker peak memory bookkeeping."""

    def __init__(self, client, make, out_path, label, limit):
        self.client, self.make, self.out_path, self.label, self.limit = client, make, out_path, label, limit
        self.peaks = {}
        self.restarted = False
        self.case = None

    def __call__(self):
        import dask.array as da

        pids = self.client.run(_reset_peak)
        shutil.rmtree(self.out_path, ignore_errors=True)
        da.to_zarr(self.make(), self.out_path, overwrite=True)
        after = self.client.run(os.getpid)
        self.restarted |= sorted(after.values()) != sorted(pids.values())
        for addr, mib in self.client.run(_peak_mib).items():
            self.peaks[addr] = max(self.peaks.get(addr, 0.0), mib)
        peaks = ", ".join(f"{m:.0f}" for m in sorted(self.peaks.values()))
        self.case.note = (
            f"{self.label}; 2 worker processes x 1 thread, memory limit {self.limit} each; "
            f"peak RSS per worker (whole process): {peaks} MiB; "
            + ("a worker was RESTARTED" if self.restarted else "no worker killed or restarted")
        )


def cases(quick, backend):
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import numvox
    import numvox.dask as nd

    n, c = (256, 128) if quick else (512, 128)
    tmp = tempfile.mkdtemp(prefix="numvox-bench-dask-")
    src = os.path.join(tmp, "volume.zarr")
    gen = da.map_blocks(_generate, chunks=((c,) * (n // c),) * 3, dtype=np.float32)
    with dask.config.set(scheduler="threads"):
        gen.to_zarr(src, overwrite=True)
    volume = da.from_zarr(src).compute()  # the in-memory baselines' input
    mib = volume.nbytes / 2**20

    def start(limit):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
                               dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}, silence_logs=40)
        client = Client(cluster)
        # load the kernels into the workers (Numba cache) outside the timings
        tiny = da.from_array(np.random.default_rng(0).random((8, 8, 8), dtype=np.float32), chunks=4)
        nd.descent_basins(tiny).compute()
        return cluster, client

    def in_memory_zarr(op, path):
        """What a user with enough RAM does: read the Zarr volume, call, write Zarr."""
        vol = da.from_zarr(src).compute(scheduler="threads")
        res = op(vol)
        with dask.config.set(scheduler="threads"):
            da.from_array(res, chunks=c).to_zarr(path, overwrite=True)

    x = lambda: da.from_zarr(src)  # noqa: E731
    chunk_note = f"{n}^3 float32 ({mib:.0f} MiB) in {(n // c) ** 3} chunks of {c}^3, Zarr -> Zarr"
    cluster = client = None
    try:
        for name, dask_op, memory_op in (
            ("labels", nd.descent_labels, numvox.descent_labels),
            ("basins", nd.descent_basins, numvox.descent_basins),
        ):
            cluster, client = start(LIMITS[name])
            run = _Run(client, lambda op=dask_op: op(x()), os.path.join(tmp, f"{name}.zarr"), chunk_note,
                       LIMITS[name])
            case = Case(
                f"{memory_op.__name__} {n}^3 float32 on Dask (LocalCluster)",
                numvox=run,
                baselines=[Baseline(f"in-memory numvox.{memory_op.__name__} (volume in RAM)",
                                    lambda op=memory_op: op(volume), repeat=1),
                           Baseline("in-memory, incl. Zarr read + write",
                                    lambda op=memory_op, name=name: in_memory_zarr(
                                        op, os.path.join(tmp, f"{name}2.zarr")),
                                    repeat=1)],
                repeat=1,
            )
            run.case = case
            yield case
            client.close()
            cluster.close()
            cluster = client = None
        got = da.from_zarr(os.path.join(tmp, "basins.zarr")).compute(scheduler="threads")
        ref = numvox.descent_basins(volume)
        if not np.array_equal(got, ref):  # pragma: no cover - a bug
            raise AssertionError("Dask basins differ from the in-memory basins")
    finally:
        if client is not None:
            client.close()
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)


NOTES = """
Method: the Dask rows time `to_zarr(numvox.dask.<op>(from_zarr(volume.zarr)))` on a
`LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=M)` (M = 448 MiB for
labels, 640 MiB for basins; a fresh cluster for each) with
`NUMBA_NUM_THREADS=1` in the workers (2 cores in all, as the in-memory call's 2 Numba threads);
this includes reading the compressed Zarr chunks and writing the results, which the in-memory
baselines do not.  "speed-up" is in-memory time / Dask time (below 1 = Dask slower).  "numvox peak
extra" is the client process only; the per-worker peaks are in the notes (whole-process RSS,
~260 MiB of which is the Python + NumPy + Numba + distributed runtime).  The in-memory calls need the
input (512 MiB at 512^3) plus their outputs (labels +128 MiB; basins +640 MiB: labels and int32
ids), i.e. 0.6-1.2 GiB beyond the process itself, against 448 / 640 MiB allowed per worker here
for the *whole* worker process.  (At 448 MiB the basins run got a worker restarted for memory:
its stages hold the chunk summaries plus a haloed chunk, its labels and ids, on top of ~260 MiB of
runtime.)  The benchmark asserts that the Dask basins equal the in-memory basins.

Labels are embarrassingly parallel (one-voxel halo: +2.4 % reads at 128^3 chunks).  Basins run
labels twice (summary pass, then relabelling from a cloned graph so that no chunk is held in
memory between the passes), plus a serial chunk-local union-find and one merge task whose memory
is ~40 bytes per chunk-local basin (a few MiB here).

On-paper plan for 4096^3 float32 (256 GiB) on a cluster, scaled from the rows of the 2026-11-25
run (an AVX-512 machine: the Dask labels pipeline, Zarr decode/encode included, cost ~77 ns per
voxel per core, basins ~260 ns, the bare in-memory labels kernel ~10 ns; on this run's Zen 1
VM the rows above give ~110 ns and ~270 ns, and ~8 ns for the in-memory labels):
- chunks 256^3 (64 MiB float32; 16^3 = 4096 chunks; halo +2.4 %), Zarr on a parallel file system or
  object store; workers with 1-2 threads and >= 1.5 GiB each (a basins task holds the haloed chunk,
  16 MiB of labels, 64 MiB of int32 ids and the summaries of a few chunks, on top of ~260 MiB of
  runtime), NUMBA_NUM_THREADS = threads per worker;
- labels: read 262 GiB, write 64 GiB (uint8); 6.9e10 voxels x 77 ns = 5300 core-seconds, i.e.
  ~5 s on 1000 cores, so storage-bound: ~35 s at 10 GB/s aggregate bandwidth;
- basins: the labels pass twice (read 2 x 262 GiB) and write 256 GiB of int32 ids; between the
  passes each chunk ships <= 1.5 MiB of boundary ids to its 26 neighbours (<= 6 GiB in all, less
  after the per-chunk unique step) and 8 B per chunk-local basin to the merge task;
  6.9e10 x 260 ns = 18000 core-seconds (~18 s on 1000 cores) against ~80 s of storage traffic at
  10 GB/s, plus the merge.  The single merge task holds ~40 B per chunk-local basin and runs a
  serial union-find (~50 ns per component): fine up to ~10^8 basins (~4 GiB, ~5 s; a noisy
  4096^3 CT has ~10^7-10^8); beyond that (pure noise, one basin per ~20 voxels, ~3.4e9) it would
  need a hierarchical merge over octants of chunks, which is not implemented.  Expected: ~2 min.
"""
