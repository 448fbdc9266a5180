"""Data-parallel training with torchrun on CPU (gloo): N processes with global batch B train the
same weights as one process with batch B, resume from checkpoints, and stop together."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import tomli_w
from safetensors.torch import load_file

from fakes import digits_recipe
from gendiff.distributed import Dist, DistributedError, check_batch
from gendiff.training import DataStream, Trainer, prepare

ROOT = Path(__file__).resolve().parents[1]


def recipe(**train):
    cfg = {"steps": 4, "batch_size": 16, "warmup_steps": 2, "checkpoint_every": 2, "seed": 5, **train}
    return digits_recipe(timesteps=50, channels=16, dropout=0.0, **cfg)


def weights(run, step, which="model"):
    return load_file(run / "checkpoints" / f"step-{step}" / f"{which}.safetensors")


def assert_close(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def gendiff_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gendiff", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_each_rank_gets_its_share_and_the_shares_make_the_global_batch():
    data = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 1, 2).contiguous()
    one = DataStream(data, 12, seed=3, flip=True, levels=256)
    shares = [DataStream(data, 12, seed=3, flip=True, levels=256, rank=r, world=3) for r in range(3)]
    for step in (0, 7, 8, 20):  # 8 steps per epoch: the last ones cross into other epochs
        full = one.batch(step)
        parts = [s.batch(step) for s in shares]
        assert all(len(p) == 4 for p in parts)
        for r, part in enumerate(parts):
            assert torch.equal(part, full[r::3])  # same examples, same flips, in the same positions
    # and the epochs really are reshuffled
    assert not torch.equal(one.batch(0), one.batch(8))


def test_the_diffusion_draws_of_a_share_are_the_rows_of_the_global_draws():
    setup = prepare(recipe())
    model = setup.model
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    full = model.loss_terms(x, generator=torch.Generator().manual_seed(1))
    for rank in (0, 1):
        part = model.loss_terms(x[rank::2], generator=torch.Generator().manual_seed(1), share=(rank, 2))
        assert torch.equal(part.t, full.t[rank::2]) and torch.equal(part.noise, full.noise[rank::2])


def test_a_global_batch_that_does_not_split_is_refused():
    assert check_batch(16, Dist(0, 4)) == 4
    with pytest.raises(DistributedError, match="divisible by the number of processes \\(3\\)"):
        check_batch(16, Dist(0, 3))


def test_two_processes_train_the_weights_of_one_and_resume(tmp_path):
    """Also carries the new contracts through the distributed path: class labels with label
    dropout, and a time sampler that learns from the gathered global batch."""
    conditional = {**recipe(), "conditioning": {"labels": True, "label_dropout": 0.25},
                   "time_sampler": {"name": "loss-second-moment", "history": 1}}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(conditional))
    single = Trainer(prepare(path), tmp_path / "one", progress=False)
    single.train()
    # two processes through the launcher, stopped at step 2 ...
    first = gendiff_cli("run", str(path), "--out", str(tmp_path / "two"), "--nproc-per-node", "2", "--no-progress",
                        "--set", "train.steps=2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert_close(weights(tmp_path / "two", 2), weights(tmp_path / "one", 2))
    # ... and resumed by torchrun itself to step 4
    second = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "gendiff", "run", str(path), "--out", str(tmp_path / "two"), "--resume",
                             "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from" in second.stdout
    for which in ("model", "ema"):
        assert_close(weights(tmp_path / "two", 4, which), weights(tmp_path / "one", 4, which))
    states = [torch.load(run / "checkpoints" / "step-4" / "state.pt", weights_only=True)["time_sampler"]
              for run in (tmp_path / "one", tmp_path / "two")]
    assert torch.equal(states[0]["counts"], states[1]["counts"]) and states[0]["counts"].sum() > 0
    assert torch.allclose(states[0]["losses"], states[1]["losses"], atol=1e-5)
    one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in two] == [1, 2, 3, 4]  # rank 0 alone logs, once per step
    assert [m["loss"] for m in two] == pytest.approx([m["loss"] for m in one], abs=1e-5)
    assert (tmp_path / "two" / "samples" / "final" / "samples.npz").is_file()


def test_the_launcher_refuses_a_batch_that_does_not_split_before_starting_anything(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe()))
    result = gendiff_cli("run", str(path), "--out", str(tmp_path / "x"), "--nproc-per-node", "3")
    assert result.returncode == 1 and "divisible by the number of processes (3)" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_with_a_bad_loss(rank, world, port, path, run_dir, out):
    """One rank of a 2-process job in which rank 1's loss turns NaN at step 3."""
    import torch.distributed as dist

    from gendiff.errors import GendiffError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    trainer = Trainer(prepare(path), run_dir, progress=False, dist=Dist(rank, world))
    if rank == 1:
        original = trainer.train_model.objective

        def poisoned(terms):
            loss, losses = original(terms)
            return (loss * float("nan") if trainer.step == 2 else loss), losses

        trainer.train_model.objective = poisoned
    try:
        trainer.train()
        message = "finished"
    except GendiffError as exc:
        message = str(exc)
    Path(out, f"rank{rank}.txt").write_text(f"{trainer.step}\n{message}")
    dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank_before_the_update(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe(steps=6)))
    mp.spawn(_rank_with_a_bad_loss, args=(2, free_port(), str(path), str(tmp_path / "run"), str(tmp_path)),
             nprocs=2, join=True)
    for rank in (0, 1):
        step, message = (tmp_path / f"rank{rank}.txt").read_text().split("\n", 1)
        assert step == "2" and "the loss became nan at step 3" in message, message
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]


@pytest.mark.slow
def test_two_nodes_through_torchruns_own_arguments(tmp_path):
    """Multi-node the usual torchrun way (--nnodes, --node_rank, a c10d rendezvous), here two
    "nodes" on this machine with one process each, sharing the run folder."""
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe(steps=2)))
    Trainer(prepare(path), tmp_path / "one", progress=False).train()
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                               "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                               "--rdzv_id=gendiff-test", "-m", "gendiff", "run", str(path), "--out",
                               str(tmp_path / "two"), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(outputs)
    for which in ("model", "ema"):
        assert_close(weights(tmp_path / "two", 2, which), weights(tmp_path / "one", 2, which))
