"""One HETMM detector shared by several threads (the "Threads" paragraph of the HETMM docstring).

Concurrent predict / predict_iter / anomaly_map calls must give the bits of the same calls run one after another, for
an ALL bank and a PTS bank, on every matching backend usable here; the threads are released together by a barrier
and each test checks that they really were inside the backbone at the same time. A select in another thread must not
change the templates of a call already running. The cuDNN TF32 switch and the lazy engine registration are shared by
the whole process and are checked on their own.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from PIL import Image

import hetmm_fast as hf
from hetmm_fast.detector import _exact_float32

S = 64
N_THREADS = 3
JOIN_TIMEOUT_S = 120


def images(n, seed=0):
    """Smooth random scenes (a shared low-frequency pattern) with small per-image variation."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(S, S), mode="bilinear")
    return (base + 0.05 * torch.rand(n, 3, S, S, generator=g)).clamp(0, 1)


def usable(backend):
    why = hf.available_backends()[backend]
    if why:
        pytest.skip(f"backend {backend} not usable here: {'; '.join(why)}")
    return backend


def run_together(calls):
    """Run every callable in its own thread, all released at once by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), [None] * len(calls)

    def worker(i):
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised in the test's thread below
            errors[i] = exc

    threads = [threading.Thread(target=worker, args=(i,), name=f"hetmm-test-{i}") for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), f"threads still running after {JOIN_TIMEOUT_S} s"
    for exc in errors:
        if exc is not None:
            raise exc
    return results


@contextlib.contextmanager
def overlap_probe(det):
    """Count the threads inside ``det.features`` at once; ``probe["peak"]`` is the most seen."""
    original, lock, probe = det.features, threading.Lock(), {"now": 0, "peak": 0}

    def counted(batch):
        with lock:
            probe["now"] += 1
            probe["peak"] = max(probe["peak"], probe["now"])
        try:
            return original(batch)
        finally:
            with lock:
                probe["now"] -= 1

    det.features = counted
    try:
        yield probe
    finally:
        del det.features


@contextlib.contextmanager
def intra_op_threads_for(det):
    """One intra-op thread per call for the torch backend, the machine's default for the others. Three threads each
    running the reference's many parallel torch ops with OpenMP teams of every core oversubscribe a small machine
    (2 cores: 25 s instead of 1.5 s for one test); the compiled engine keeps its teams, so their concurrency is
    exercised. The serial run must use the same count: the torch ops' results may depend on it."""
    before = torch.get_num_threads()
    if det.backend == "torch":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def assert_same_prediction(got, want):
    assert got.names == want.names
    for key in ("scores", "maps", "pro_maps", "raw"):
        assert torch.equal(getattr(got, key), getattr(want, key)), key


def assert_same_results(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.index, g.name, g.path, g.score, g.error) == (w.index, w.name, w.path, w.score, w.error)
        for key in ("map", "pro_map", "raw", "image"):
            assert torch.equal(getattr(g, key), getattr(w, key)), key


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    """``{"all": path, "pts": path}``: one ALL bank of 6 images and its PTS-3 selection."""
    root = tmp_path_factory.mktemp("banks")
    det = hf.HETMM(image_size=S, progress=False).fit(images(6))
    out = {"all": det.save(root / "all.hetmm")}
    out["pts"] = det.select(3).save(root / "pts.hetmm")
    return out


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Per thread a list of 3 PNG files (different images for each thread)."""
    root = tmp_path_factory.mktemp("images")
    out = []
    for i in range(N_THREADS):
        paths = []
        for j, img in enumerate(images(3, seed=30 + i)):
            path = root / f"t{i}_{j}.png"
            Image.fromarray((img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(path)
            paths.append(path)
        out.append(paths)
    return out


@pytest.fixture(scope="module", params=[("cpu", "all"), ("cpu", "pts"), ("torch", "all"), ("torch", "pts")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def det(request, banks):
    backend, bank = request.param
    return hf.HETMM.load(banks[bank], backend=usable(backend), batch_size=2, progress=False)


def test_predict_from_threads_equals_serial(det):
    inputs = [images(3, seed=10 + i) for i in range(N_THREADS)]  # each thread its own images: a mix-up would show
    with intra_op_threads_for(det):
        want = [det.predict(x) for x in inputs]
        with overlap_probe(det) as probe:
            got = run_together([lambda x=x: det.predict(x) for x in inputs])
    assert probe["peak"] >= 2, "the threads never ran the backbone at the same time"
    for g, w in zip(got, want):
        assert_same_prediction(g, w)
    assert set(det.timings) >= {"predict"}


def test_predict_iter_and_anomaly_map_from_threads_equal_serial(det, image_files):
    """Two threads stream files with predict_iter (each with its own reader pool and progress bar), a third calls
    anomaly_map on in-memory images."""
    x = images(3, seed=40)
    calls = [lambda p=paths: list(det.predict_iter(p)) for paths in image_files[:2]]
    calls.append(lambda: det.anomaly_map(x))
    with intra_op_threads_for(det):
        want = [call() for call in calls]
        det.progress = True  # tqdm bars from several threads at once (written to the captured stderr)
        try:
            with overlap_probe(det) as probe:
                got = run_together(calls)
        finally:
            det.progress = False
    assert probe["peak"] >= 2, "the threads never ran the backbone at the same time"
    for g, w in zip(got[:2], want[:2]):
        assert_same_results(g, w)
    assert torch.equal(got[2], want[2])


@pytest.fixture
def snapshot_backend():
    for backend in ("cpu", "torch"):
        if not hf.available_backends()[backend]:
            return backend
    pytest.skip("no CPU matching backend")  # unreachable: torch always runs


def test_select_in_another_thread_leaves_a_running_call_on_its_templates(banks, snapshot_backend):
    """select(None) from another thread between the batches of a predict (or a predict_iter) call: every batch of
    that call is still matched against the PTS set the call started with; the next call uses the ALL set."""
    det = hf.HETMM.load(banks["pts"], backend=snapshot_backend, batch_size=2, progress=False)
    x = images(4, seed=50)  # two batches
    want_pts = det.predict(x)
    want_all = hf.HETMM.load(banks["all"], backend=snapshot_backend, batch_size=2, progress=False).predict(x)
    assert not torch.equal(want_pts.raw[2:], want_all.raw[2:])  # the sets differ, so a switch would show

    def select_all_in_thread():
        t = threading.Thread(target=det.select, args=(None,))
        t.start()
        t.join(JOIN_TIMEOUT_S)
        assert det.tsize is None

    original, batches = det.features, []

    def features_then_select(batch):
        out = original(batch)
        if not batches:  # during the first batch, after its features and before its matching
            select_all_in_thread()
        batches.append(batch.shape[0])
        return out

    det.features = features_then_select
    try:
        got = det.predict(x)
    finally:
        del det.features
    assert batches == [2, 2]
    assert_same_prediction(got, want_pts)
    assert_same_prediction(det.predict(x), want_all)

    det.select(3)
    assert_same_prediction(det.predict(x), want_pts)  # the selection is deterministic
    stream = det.predict_iter(x)
    first = next(stream)  # the first batch is scored; the second is not yet
    select_all_in_thread()
    rest = list(stream)
    assert [r.score for r in [first] + rest] == want_pts.scores.tolist()
    assert torch.equal(torch.stack([r.raw for r in [first] + rest]), want_pts.raw)


def test_exact_float32_contexts_overlapping_across_threads():
    """Predicts on a GPU turn cuDNN's process-wide TF32 switch off around their post-processing. Thread A enters,
    B enters, A leaves while B is still inside: TF32 must stay off for B, and come back when B leaves."""
    cuda = torch.device("cuda")  # the context only reads the device type: no GPU needed
    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        a_inside, a_may_leave = threading.Event(), threading.Event()

        def thread_a():
            with _exact_float32(cuda):
                a_inside.set()
                a_may_leave.wait(JOIN_TIMEOUT_S)

        a = threading.Thread(target=thread_a)
        a.start()
        assert a_inside.wait(JOIN_TIMEOUT_S)
        with _exact_float32(cuda):
            assert torch.backends.cudnn.allow_tf32 is False
            a_may_leave.set()
            a.join(JOIN_TIMEOUT_S)
            assert not a.is_alive()
            assert torch.backends.cudnn.allow_tf32 is False, "A's exit turned TF32 back on under B"
        assert torch.backends.cudnn.allow_tf32 is True, "the caller's setting was not restored"
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_first_predicts_from_threads_find_the_engine():
    """In a fresh process the engines load lazily; a detector's first predicts, from several threads at once, must
    all find the cpu engine registered (forcing it: a thread that found it missing would raise)."""
    usable("cpu")
    code = textwrap.dedent(f"""
        import threading, torch, hetmm_fast as hf
        det = hf.HETMM(image_size={S}, progress=False, backend="cpu").fit(torch.rand(2, 3, {S}, {S}))
        barrier, errors = threading.Barrier({N_THREADS}), []
        def worker():
            barrier.wait()
            try:
                det.predict(torch.rand(1, 3, {S}, {S}))
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=worker) for _ in range({N_THREADS})]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("ERRORS", errors)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=JOIN_TIMEOUT_S,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERRORS []" in proc.stdout, proc.stdout[-2000:]
