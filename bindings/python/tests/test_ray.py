"""fusebert.ray on a local Ray cluster (CPU backend): Ray Data through an actor pool (clean, an
actor killed mid-run, a failed job resumed from its checkpoint) and Ray Serve with dynamic
batching. Marked `ray`: needs bindings/python/requirements-ray.txt (`pytest -m ray`)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
import pyarrow.parquet as pq  # noqa: E402

import fusebert  # noqa: E402
from conftest import MODELS  # noqa: E402
from fusebert.ray import FusebertEmbedder  # noqa: E402

pytestmark = pytest.mark.ray

MODEL = str(MODELS / "tiny-roberta-cls")
N = 2000
HERE = Path(__file__).resolve().parent


def text_of(i: int) -> str:
    return f"document {i}: " + " ".join(f"w{(i * 7 + k) % 97}" for k in range(i % 23))


def add_text(batch):
    batch["text"] = np.array([text_of(int(i)) for i in batch["id"]], dtype=object)
    return batch


class CrashOnce(FusebertEmbedder):
    """Kills its own worker process (as a CUDA fault handler would) on its 3rd batch, once per
    test (an O_EXCL marker file)."""

    def __init__(self, marker: str, **kw):
        super().__init__(**kw)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 3:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                os._exit(1)
            except FileExistsError:
                pass
        return super().__call__(batch)


class FailOnce(FusebertEmbedder):
    """Raises (an application error: Ray aborts the job) on an actor's 8th batch while the
    marker file does not exist."""

    def __init__(self, marker: str, **kw):
        super().__init__(**kw)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 8 and not os.path.exists(self.marker):
            raise RuntimeError("injected failure")
        return super().__call__(batch)


@pytest.fixture(scope="module")
def expected():
    """The single-process run: what every Ray run must equal bit for bit."""
    m = fusebert.SentenceTransformer(MODEL, device="cpu", threads=1)
    return m.encode([text_of(i) for i in range(N)])


@pytest.fixture(scope="module")
def cluster():
    # Workers inherit the driver's environment: make fusebert and this module importable there.
    paths = [str(Path(fusebert.__file__).resolve().parents[1]), str(HERE)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # offline: no usage report
    # 4 logical CPUs on 2 cores: the checkpoint filter actor reserves one (research: with 2 the
    # resumed job deadlocks).
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def run(tmp: Path, udf, udf_kwargs: dict, checkpoint: Path | None = None) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.checkpoint_config = (
        ray.data.checkpoint.CheckpointConfig(id_column="id", checkpoint_path=str(checkpoint), delete_checkpoint_on_success=False)
        if checkpoint
        else None
    )
    try:
        ds = ray.data.range(N, override_num_blocks=20).map_batches(add_text, batch_format="numpy")
        ds = ds.map_batches(
            udf,
            fn_constructor_kwargs={"model": MODEL, "device": "cpu", "threads": 1, **udf_kwargs},
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.5,
            batch_size=50,
            batch_format="pyarrow",
        )
        ds.write_parquet(str(tmp))
    finally:
        ctx.checkpoint_config = None


def check_output(out: Path, expected: np.ndarray) -> None:
    table = pq.read_table(str(out))
    ids = np.asarray(table.column("id").to_pylist())
    assert len(ids) == N and len(np.unique(ids)) == N, (len(ids), len(np.unique(ids)))
    emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    order = np.argsort(ids)
    assert np.array_equal(ids[order], np.arange(N))
    assert np.array_equal(emb[order], expected), "Ray output differs from the single-process run"
    assert all(t == text_of(int(i)) for t, i in zip(table.column("text").to_pylist(), ids))


def test_actor_pool_equals_single_process(cluster, expected, tmp_path):
    run(tmp_path / "out", FusebertEmbedder, {})
    check_output(tmp_path / "out", expected)


def test_killed_actor_loses_and_duplicates_nothing(cluster, expected, tmp_path):
    marker = tmp_path / "crashed"
    run(tmp_path / "out", CrashOnce, {"marker": str(marker)})
    assert marker.exists(), "the injected crash did not happen"
    check_output(tmp_path / "out", expected)


def test_failed_job_resumes_writing_every_row_once(cluster, expected, tmp_path):
    marker, out, ckpt = tmp_path / "fixed", tmp_path / "out", tmp_path / "ckpt"
    with pytest.raises(Exception, match="injected failure"):
        run(out, FailOnce, {"marker": str(marker)}, checkpoint=ckpt)
    written = pq.read_table(str(out)).num_rows if out.exists() and any(out.iterdir()) else 0
    assert 0 < written < N, f"the failed run should have written part of the output, wrote {written}"
    marker.touch()
    run(out, FailOnce, {"marker": str(marker)}, checkpoint=ckpt)
    check_output(out, expected)


def test_serve_batches_concurrent_calls(cluster, tmp_path):
    """2 replicas, 256 concurrent handle calls equal to in-process encode in batches > 1, and
    one HTTP POST through Serve's proxy on loopback."""
    from ray import serve

    from fusebert.ray import serve_app

    texts = [text_of(i) for i in range(256)]
    want = fusebert.SentenceTransformer(MODEL, device="cpu", threads=1).encode(texts)
    app = serve_app(
        MODEL,
        num_replicas=2,
        device="cpu",
        threads=1,
        max_batch_size=16,
        batch_wait_timeout_s=0.02,
        ray_actor_options={"num_cpus": 0.5},
    )
    import json
    import socket
    import urllib.request

    with socket.socket() as sock:  # a free loopback port for Serve's HTTP proxy
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(app, name="fusebert-test", route_prefix="/embed")
    try:
        responses = [handle.embed.remote(t) for t in texts]
        got = np.asarray([r.result() for r in responses], dtype=np.float32)
        assert np.array_equal(got, want), "Serve answers differ from in-process encode"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/embed",
            data=json.dumps({"text": texts[3]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            body = json.loads(r.read())
        assert np.array_equal(np.asarray(body["embedding"], dtype=np.float32), want[3])
        sizes = {}
        for _ in range(20):  # concurrent stats calls spread over the replicas: ask until both answered
            for s in [r.result() for r in [handle.stats.remote() for _ in range(64)]]:
                sizes[s["pid"]] = s["batch_sizes"]
            if len(sizes) == 2:
                break
        all_sizes = [b for bs in sizes.values() for b in bs]
        # max_ongoing_requests = 4 * 16 per replica: 256 calls at once need both replicas
        # the 256 handle calls and the HTTP one
        assert len(sizes) == 2 and all(sizes.values()) and sum(all_sizes) == 257, sizes
        assert max(all_sizes) > 1 and np.mean(all_sizes) > 1, sizes
        print(f"serve: {len(sizes)} replicas seen, {len(all_sizes)} batches, mean {np.mean(all_sizes):.1f}, max {max(all_sizes)}")
    finally:
        serve.shutdown()
