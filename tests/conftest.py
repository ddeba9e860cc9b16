import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from hypothesis import HealthCheck, settings

# One torch thread by default (the suite's numbers were written for it); LUCENT_TEST_THREADS=2 runs the whole
# suite with two, which every test must also pass (tolerances a different thread split can meet).
torch.set_num_threads(int(os.environ.get("LUCENT_TEST_THREADS", "1")))

# LUCENT_TEST_CPU=avx2 or native-bf16 runs the whole suite with the decisions of that CPU class (what the bf16 probe
# answers, so `precision="auto"` and the emulated-bf16 warning follow), whatever CPU runs it. The arithmetic stays
# this CPU's; tests/test_hardware_matrix.py covers every class's decisions in every run. (The probe is replaced in
# lucent_dsl, not in torch.ops: inductor expects every op there to be an OpOverloadPacket.)
_CPU = os.environ.get("LUCENT_TEST_CPU")
if _CPU:
    if _CPU not in ("avx2", "native-bf16"):
        raise SystemExit(f"LUCENT_TEST_CPU={_CPU!r}: use avx2 or native-bf16")
    from lucent_dsl.models import hardware as _hardware

    def _as_class(strict: bool = False) -> bool:
        return _CPU == "native-bf16"

    _as_class.__wrapped__ = _hardware.cpu_has_bf16  # type: ignore[attr-defined]
    _hardware.cpu_has_bf16 = _as_class


@pytest.fixture
def real_cpu_probe(monkeypatch):
    """Tests of the probe itself read torch's answer, also under LUCENT_TEST_CPU."""
    from lucent_dsl.models import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", getattr(hardware.cpu_has_bf16, "__wrapped__", hardware.cpu_has_bf16))

settings.register_profile(
    "default",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
# The suite is deterministic by default (the same examples every run, so CI never flakes);
# HYPOTHESIS_RANDOM=1 explores fresh examples on each run.
settings.load_profile("default" if os.environ.get("HYPOTHESIS_RANDOM") else "ci")
# LUCENT_EXPLORE=1: fresh examples (seeded by pytest's --hypothesis-seed, which a failure's message repeats), at most
# LUCENT_EXPLORE_EXAMPLES (default 10) per test; tests/test_hypothesis_explore.py runs it in every CI run.
settings.register_profile("explore", parent=settings.get_profile("default"), derandomize=False, database=None,
                          max_examples=int(os.environ.get("LUCENT_EXPLORE_EXAMPLES", "10")), print_blob=True)
if os.environ.get("LUCENT_EXPLORE"):
    settings.load_profile("explore")


def _explore_budget(items) -> None:
    """Under LUCENT_EXPLORE, a test's own max_examples is capped at the explore budget and its sample is fresh."""
    cap = settings.get_profile("explore").max_examples
    for item in items:
        test = getattr(item, "obj", None)
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is not None:
            test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
                own, max_examples=min(own.max_examples, cap), derandomize=False, database=None)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LUCENT_EXPLORE"):
        _explore_budget(items)
    # With ATEN_CPU_CAPABILITY forced below the CPU's own (AVX2 kernels on an AVX-512 machine, to compute as an
    # AVX2 machine does), inductor's generated code gave NaN or wrong values in three torch.compile tests; they pass
    # on real AVX2 and AVX-512 machines. Skipped, with the reason, only under that forcing.
    if not os.environ.get("ATEN_CPU_CAPABILITY"):
        return
    skip = pytest.mark.skip(reason="torch.compile under a forced ATEN_CPU_CAPABILITY (run these without it)")
    for item in items:
        if item.get_closest_marker("compile") is not None:
            item.add_marker(skip)
