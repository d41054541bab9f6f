"""Two processes, one job: ``train`` and ``unlearn`` through the command line with
``jax.distributed`` on localhost, a killed process, a relaunch with ``--resume``.

Each process is ``python -m scissorhands_jax`` with 2 virtual CPU devices and the job's
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` (collectives
over gloo), so the data mesh spans 4 devices in 2 processes. The job trains the digits
original, checkpointing every 2 steps; process 1 is killed with SIGKILL once the first
checkpoint is on disk, then process 0 (what a scheduler does when one task of a job
dies). The relaunched job resumes and gets a SIGTERM (a preemption notice) on process 1
only: both processes save the same step and exit with 75. The third launch finishes and
the job unlearns. The reference is the same config in one process on 4 devices, run at
the same time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "scissorhands_jax/configs/digits10_random10.py")
# 512 training digits: 8 steps per epoch, 16 in all; a checkpoint every 2 steps
SETTINGS = [CONFIG, "--smoke", "--no-progress", "--set", "data.limit_train=512"]
TRAIN = ["train", *SETTINGS, "--only", "original", "--set", "train.checkpoint_every=2"]
UNLEARN = ["unlearn", *SETTINGS]
TOTAL_STEPS = 16
PROCESSES, LOCAL_DEVICES = 2, 2
TIMEOUT_S = 600  # every process; a hung collective fails the test instead of the suite
JOB_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(devices: int, job: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}
    env.update(
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        SCISSORHANDS_CACHE="off",
        PYTHONUNBUFFERED="1",  # a line is in the log file as soon as it is printed
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        **(job or {}),
    )
    return env


class _Processes:
    """Started commands whose output goes to files (no pipe to fill up), killed on exit."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        err = open(self.logs / f"{name}.err", "w")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=self.logs)
        proc.files = (out, err)
        self.running.append(proc)
        return proc

    def job(self, name: str, args: list[str]) -> list[subprocess.Popen]:
        """The command ``args`` as one job of :data:`PROCESSES` processes."""
        job = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}"}
        job["JAX_NUM_PROCESSES"] = str(PROCESSES)
        return [
            self.start(
                f"{name}.{i}",
                [sys.executable, "-m", "scissorhands_jax", *args],
                _environment(LOCAL_DEVICES, {**job, "JAX_PROCESS_ID": str(i)}),
            )
            for i in range(PROCESSES)
        ]

    def wait(self, procs: list[subprocess.Popen], timeout: float = TIMEOUT_S) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise
        return codes

    def output(self, name: str) -> tuple[str, str]:
        return tuple((self.logs / f"{name}.{kind}").read_text() for kind in ("out", "err"))

    def kill_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            for f in proc.files:
                f.close()


def _committed_steps(directory: Path) -> list[int]:
    """Steps orbax has finished (it renames a step's temporary directory when done)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _reference_script(run: Path) -> str:
    return (
        "from scissorhands_jax import cli\n"
        f"assert cli.main({TRAIN + ['--out', str(run)]!r}) == 0\n"
        f"assert cli.main({UNLEARN + ['--run', str(run)]!r}) == 0\n"
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    job_run, one_run = tmp / "job", tmp / "one"
    procs = _Processes(tmp)
    found: dict = {"job": job_run, "one": one_run, "procs": procs}
    try:
        reference = procs.start(
            "reference",
            [sys.executable, "-c", _reference_script(one_run)],
            _environment(PROCESSES * LOCAL_DEVICES),
        )
        first = procs.job("train1", TRAIN + ["--out", str(job_run)])
        checkpoints = job_run / "original" / "checkpoints"
        deadline = time.monotonic() + TIMEOUT_S
        while not _committed_steps(checkpoints):
            ended = time.monotonic() > deadline or any(p.poll() is not None for p in first)
            assert not ended, ("no first save", procs.output("train1.0")[1][-3000:])
            time.sleep(0.02)
        first[1].send_signal(signal.SIGKILL)
        try:  # process 0 may notice the dead peer by itself; else the scheduler kills it
            first[0].wait(timeout=5)
        except subprocess.TimeoutExpired:
            first[0].kill()
        found["killed"] = procs.wait(first)
        found["steps_at_kill"] = _committed_steps(checkpoints)
        # relaunched, then preempted: SIGTERM to process 1 only, once both have joined
        # (process 0 has restored the checkpoint) and before the loop's first step
        second = procs.job("train2", TRAIN + ["--out", str(job_run), "--resume"])
        deadline = time.monotonic() + TIMEOUT_S
        while "resuming from step" not in procs.output("train2.0")[0]:
            ended = time.monotonic() > deadline or any(p.poll() is not None for p in second)
            assert not ended, ("no resume", procs.output("train2.0")[1][-3000:])
            time.sleep(0.02)
        second[1].send_signal(signal.SIGTERM)
        found["preempted"] = procs.wait(second)
        found["steps_at_preemption"] = _committed_steps(checkpoints)
        third = procs.job("train3", TRAIN + ["--out", str(job_run), "--resume"])
        found["resume"] = procs.wait(third)
        found["unlearn"] = procs.wait(procs.job("unlearn", UNLEARN + ["--run", str(job_run)]))
        found["reference"] = procs.wait([reference])[0]
        yield found
    finally:
        procs.kill_all()


def _load(run: Path):
    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.config import load_config

    cfg = load_config(CONFIG, smoke=True, overrides=["data.limit_train=512"])
    split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    original = pipe.load_trained(run, "original", cfg, split, model)
    return original, pipe.load_unlearned(run, cfg, split, model)


def _max_relative(a, b) -> float:
    import jax

    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)))
    return worst


@pytest.mark.slow
def test_a_killed_two_process_job_resumes_and_matches_one_process(runs):
    procs = runs["procs"]
    assert runs["killed"][1] == -signal.SIGKILL
    killed_at = max(runs["steps_at_kill"])
    assert 0 < killed_at < TOTAL_STEPS  # killed mid-run
    for name, codes in (("train3", runs["resume"]), ("unlearn", runs["unlearn"])):
        assert codes == [0] * PROCESSES, [procs.output(f"{name}.{i}")[1][-3000:] for i in (0, 1)]
    assert runs["reference"] == 0, procs.output("reference")[1][-3000:]
    out = procs.output("train2.0")[0]
    assert f"original: resuming from step {killed_at} of {TOTAL_STEPS}" in out
    out = procs.output("train3.0")[0]
    stopped = max(runs["steps_at_preemption"])
    assert f"original: resuming from step {stopped} of {TOTAL_STEPS}" in out
    (o_job, _), (p_job, _, m_job) = _load(runs["job"])
    (o_one, _), (p_one, _, m_one) = _load(runs["one"])
    import jax

    for a, b in zip(jax.tree.leaves(m_job), jax.tree.leaves(m_one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print("relative differences:", _max_relative(o_job, o_one), _max_relative(p_job, p_one))
    assert _max_relative(o_job, o_one) < 1e-5
    assert _max_relative(p_job, p_one) < 1e-5


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_saved_step(runs):
    procs = runs["procs"]
    # both processes saved together and asked to be requeued (EX_TEMPFAIL), though
    # only process 1 got the signal
    assert runs["preempted"] == [75] * PROCESSES, procs.output("train2.0")[1][-3000:]
    stopped = max(runs["steps_at_preemption"])
    assert max(runs["steps_at_kill"]) < stopped < TOTAL_STEPS
    assert "original: preempted and saved" in procs.output("train2.0")[0]


def _gloo(line: str) -> bool:
    """A line of the collectives library's own connection report (not the command's output).
    Under load its "[Gloo] Rank 2 is connected to 3 peer ranks..." can arrive cut in two."""
    return line.startswith("[Gloo]") or "peer ranks" in line


@pytest.mark.slow
def test_process_zero_alone_writes_the_files_and_speaks(runs):
    procs, run = runs["procs"], runs["job"]
    log = json.loads((run / "original" / "log.json").read_text())
    stopped = max(runs["steps_at_preemption"])  # the preempted segment, then the last
    assert [s["to_step"] for s in log["segments"]] == [stopped, TOTAL_STEPS]  # one each
    assert json.loads((run / "unlearned" / "log.json").read_text())["log"]
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp") or "tmp" in p.name]
    assert not leftovers and not (run / ".scissorhands.lock").exists()
    for name in ("train3", "unlearn"):
        main, other = procs.output(f"{name}.0")[0], procs.output(f"{name}.1")[0]
        said = "step 16 of 16 (complete)" if name == "train3" else "unlearned in"
        assert main.count(said) == 1
        assert [line for line in other.splitlines() if not _gloo(line)] == []


def test_job_settings_come_from_all_three_variables_or_none():
    from scissorhands_jax.experiment.runtime import job_settings

    assert job_settings({}) is None
    assert job_settings({"JAX_PROCESS_ID": " "}) is None  # blank counts as unset
    full = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    assert job_settings(full) == ("10.0.0.1:1234", 4, 3)
    bad = [
        ({"JAX_PROCESS_ID": None}, "JAX_PROCESS_ID is not set"),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1"}, "must be HOST:PORT"),
        ({"JAX_COORDINATOR_ADDRESS": ":1234"}, "must be HOST:PORT"),
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES must be an integer"),
        ({"JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"}, "must be >= 1"),
        ({"JAX_PROCESS_ID": "4"}, r"JAX_PROCESS_ID must be in 0\.\.3"),
        ({"JAX_PROCESS_ID": "-1"}, r"JAX_PROCESS_ID must be in 0\.\.3"),
    ]
    for change, message in bad:
        env = {k: v for k, v in {**full, **change}.items() if v is not None}
        with pytest.raises(ValueError, match=message):
            job_settings(env)


def test_a_malformed_job_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from scissorhands_jax import cli

    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    code = cli.main(["train", CONFIG, "--smoke", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID are not set" in err
    assert not (tmp_path / "run").exists()


def test_a_process_other_than_zero_writes_nothing_and_takes_no_lock(tmp_path, monkeypatch):
    import jax

    from scissorhands_jax.experiment.rundir import LOCK_NAME, run_directory, write_json_atomic

    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with run_directory(tmp_path / "new") as run:  # process 0 creates it
        assert not run.exists()
    tmp_path.joinpath("run").mkdir()
    with run_directory(tmp_path / "run") as run:
        assert not (run / LOCK_NAME).exists()
        write_json_atomic(run / "log.json", {"a": 1})
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    with run_directory(tmp_path / "run") as run:
        assert (run / LOCK_NAME).exists()
        write_json_atomic(run / "log.json", {"a": 1})
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["log.json"]
