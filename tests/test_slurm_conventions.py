"""SLURM conventions: job names `gdm-<experiment>-<kind>`, the requeue budget and USR2 lead time from
the config, and the sbatch templates' USR2 → requeue → resume path.

The unit tests run anywhere; the others submit real jobs, to the two-host cluster when it is up (its
requeued jobs start again after 20 s instead of SLURM's default 120 s), else to the one-node cluster.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import prepared, slurm_cluster_up, wait_for

from gdm import lifecycle
from gdm.cells import expand_cells
from gdm.config import ConfigError, ResourcesConfig, load_config
from launch.executors import _slurm_parameters, job_name, make_executor

ROOT = Path(__file__).resolve().parents[1]
TWO_HOST_CONF = Path(os.environ.get("GDM_SLURM2_DIR", "/tmp/gdm-slurm2")) / "slurm.conf"


# --- without a cluster ---------------------------------------------------------------------------

def test_job_names_say_experiment_and_kind():
    assert [job_name("celeba80", kind) for kind in ("train", "eval", "prepare", "report")] == [
        "gdm-celeba80-train", "gdm-celeba80-eval", "gdm-celeba80-prepare", "gdm-celeba80-report"]
    with pytest.raises(ValueError, match="unknown job kind 'sample'; choose one of train, eval, prepare, report"):
        job_name("celeba80", "sample")


def test_slurm_parameters_carry_name_and_signal_lead():
    resources = ResourcesConfig(signal_delay_s=300, max_requeues=9)
    params = _slurm_parameters(resources, max_parallel=2, name="gdm-x-eval")
    assert params["name"] == "gdm-x-eval" and params["slurm_signal_delay_s"] == 300
    assert "name" not in _slurm_parameters(resources, max_parallel=2)  # unnamed: submitit's default


def test_one_failing_rank_ends_the_whole_srun_step(tmp_path):
    """submitit's own batch script runs `srun --kill-on-bad-exit=1`: a rank that raises (a NaN) ends its step's
    other ranks at once instead of leaving them in a collective until the 30-minute timeout."""
    import submitit

    executor = submitit.AutoExecutor(tmp_path, cluster="slurm")
    executor.update_parameters(**_slurm_parameters(ResourcesConfig(), max_parallel=1, name="gdm-x-train"))
    script = executor._executor._make_submission_file_text("python -c pass", "uid")
    [srun] = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "--kill-on-bad-exit=1" in srun.split()


@pytest.mark.parametrize(("override", "message"), [
    ("launch.train.max_requeues=-1", "'launch.train.max_requeues' is -1; it must be ≥ 0"),
    ("launch.eval.signal_delay_s=0", "'launch.eval.signal_delay_s' is 0; it must be > 0"),
    ("launch.train.signal_delay_s=3600", r"shorter than launch.train.time_min \(60 min\)"),
])
def test_config_refuses_bad_requeue_settings(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


# --- on a cluster --------------------------------------------------------------------------------

@pytest.fixture
def cluster(monkeypatch) -> Iterator[str]:
    """SLURM_CONF of the cluster the jobs go to (sbatch exports it to them); skips without one."""
    if slurm_cluster_up(TWO_HOST_CONF) is None:
        monkeypatch.setenv("SLURM_CONF", str(TWO_HOST_CONF))
    elif reason := slurm_cluster_up():
        pytest.skip(f"{reason}; start one as root: bash slurm/start_local_cluster.sh")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")


@pytest.mark.slurm
def test_submitted_job_has_its_name_signal_and_requeue_budget(cluster, tmp_path):
    from submitit.core.utils import DelayedSubmission

    resources = ResourcesConfig(time_min=5, mem_gb=0.5, max_requeues=7, signal_delay_s=90)
    executor = make_executor("slurm", tmp_path / "%j", resources, 1, name=job_name("tiny", "prepare"))
    job = executor.submit(functools.partial(sum, [1, 2]))
    queued = subprocess.run(["squeue", "-h", "--states=all", "-j", str(job.job_id), "-o", "%j"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert queued == ["gdm-tiny-prepare"]
    script = job.paths.submission_file.read_text()
    assert "#SBATCH --job-name=gdm-tiny-prepare" in script and "#SBATCH --signal=USR2@90" in script
    # submitit's slurm_max_num_timeout: the time-limit requeues the job has left.
    assert DelayedSubmission.load(job.paths.submitted_pickle)._timeout_countdown == 7
    wait_for(job.paths.result_pickle.exists, 120, "the job's result")
    assert job.result() == 3


@pytest.mark.slurm
@pytest.mark.slow
def test_hand_submitted_train_task_requeues_on_usr2_and_resumes(cluster, tiny_overrides, tmp_path):
    """USR2 to the batch script while its task trains: the script requeues the task, which resumes from last.ckpt.

    The task holds at step 50, after its checkpoint (tests/held_gdm.py), until the requeue's SIGTERM ends it: the
    test signals once the hold is reached. Racing a checkpoint at step ≥ 25 instead, a loaded CI machine could
    train to the last step before the USR2 landed. The requeued task finds its hold marker and trains on."""
    hold_at, markers = 50, tmp_path / "held"
    overrides = [*tiny_overrides, "n_train=[4]", "splits=[A]", "wandb.mode=disabled", "trainer.max_steps=400",
                 "trainer.checkpoint_every=25", "trainer.log_every=25"]
    cfg = prepared(load_config(ROOT / "configs/quickstart.yaml", overrides))
    directory = expand_cells(cfg)[0].directory(cfg)
    log_file = tmp_path / "train.out"
    env = {**os.environ, "GDM": f"{sys.executable} {ROOT / 'tests' / 'held_gdm.py'} {hold_at} {markers}"}
    sbatch = ["sbatch", "--parsable", "--array=0", "--mem=1G", "--cpus-per-task=1", "--time=10",
              "--open-mode=append", f"--output={log_file}", "slurm/train_array.sbatch", "configs/quickstart.yaml",
              *overrides]
    array_job = subprocess.run(sbatch, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    log = lambda: log_file.read_text() if log_file.exists() else ""  # noqa: E731
    held = markers / f"{expand_cells(cfg)[0].cell_id}-rank0"
    wait_for(held.exists, 180, f"the task to hold at step {hold_at}, after its checkpoint", log)
    # What SLURM does 120 s before the time limit (--signal=B:USR2@120), sent now, to the batch script.
    subprocess.run(["scancel", "--batch", "--signal=USR2", f"{array_job}_0"], check=True)
    wait_for(lambda: lifecycle.is_done(directory), 300, "the requeued task to finish", log)
    text = log()
    assert "[gdm] USR2: requeueing job" in text and "(restart 1)" in text
    resumed = text.split("USR2: requeueing", 1)[1]
    assert f"Restoring states from the checkpoint path at {directory / 'last.ckpt'}" in resumed  # not from 0
    assert lifecycle.status(directory).record["step"] == 400
