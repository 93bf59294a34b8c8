"""Model-based test: random steps on both sides, every path held to the README's "Rules".

The reference and the machine live in tests/sync/model_rules.py. CI runs a bounded number of
examples; `make soak` (bench/soak_rules.py) runs this test with thousands. Settings, all
optional: STAGEMAP_MODEL_EXAMPLES, STAGEMAP_MODEL_STEPS, STAGEMAP_MODEL_SHRINK_SECONDS,
STAGEMAP_MODEL_RANDOM (draw new examples instead of CI's fixed ones),
STAGEMAP_MODEL_REPORT (a JSON summary is written there), STAGEMAP_MODEL_SKIP (invariants
counted but not raised, comma-separated, to look past a known failure),
STAGEMAP_MODEL_REPRODUCE (the blob of a failure Hypothesis printed: replays just that one).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, __version__, reproduce_failure, settings
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import get_state_machine_test

from salesforce_emulator.server import EmulatorServer
from tests.sync import model_rules
from tests.sync.model_rules import FINDINGS, StageRulesMachine

EXAMPLES = int(os.environ.get("STAGEMAP_MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("STAGEMAP_MODEL_STEPS", "25"))
# Shrinking a failure replays many examples; Hypothesis gives it up to 5 minutes. CI keeps it
# short (a failure still shows a shrunk sequence), the soak may allow more.
SHRINK_SECONDS = int(os.environ.get("STAGEMAP_MODEL_SHRINK_SECONDS", "45"))
# CI runs the same examples every time (a red run is the code's doing, not the dice's);
# the soak sets STAGEMAP_MODEL_RANDOM and explores.
RANDOM = bool(os.environ.get("STAGEMAP_MODEL_RANDOM"))
REPRODUCE = os.environ.get("STAGEMAP_MODEL_REPRODUCE", "")


@pytest.fixture(scope="module")
def model_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    with model_rules.empty_org(tmp_path_factory) as server:
        yield server


@pytest.fixture
def model_harness(db, model_org, settings, monkeypatch, django_capture_on_commit_callbacks):
    # The machine moves one clock for both sides; each step is a distinct second, so no
    # lookback is needed to see every change.
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 0
    with model_rules.harness(model_org, "Model org", settings=settings, monkeypatch=monkeypatch,
                             capture_on_commit=django_capture_on_commit_callbacks,
                             step=lambda: model_rules.CURRENT_STEP[0]) as harness:
        yield harness


def _summary(elapsed: float) -> dict:
    return {
        "examples": FINDINGS.examples,
        "steps": FINDINGS.steps,
        "checks": FINDINGS.checks,
        "seconds": round(elapsed, 1),
        "failures": FINDINGS.failures,
        "first_failure": FINDINGS.first_failure,
        "steps_by_rule": dict(sorted(FINDINGS.by_rule.items())),
    }


def test_every_path_follows_the_rules(model_harness, capsys, monkeypatch):
    StageRulesMachine.harness = model_harness
    # No public setting for it: the engine's module constant is the only knob.
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS)
    machine_settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        print_blob=True,
        phases=(Phase.generate, Phase.shrink, Phase.explain),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.filter_too_much],
    )
    started = time.monotonic()
    try:
        machine_test = get_state_machine_test(StageRulesMachine, settings=machine_settings)
        if REPRODUCE:
            machine_test = reproduce_failure(__version__, REPRODUCE.encode())(machine_test)
        machine_test()
    finally:
        summary = _summary(time.monotonic() - started)
        report = os.environ.get("STAGEMAP_MODEL_REPORT")
        if report:
            with open(report, "w", encoding="utf-8") as out:
                json.dump(summary, out, indent=2)
        with capsys.disabled():
            print(
                f"\nmodel rules: {summary['examples']} examples, {summary['steps']} steps, "
                f"{summary['checks']} checks in {summary['seconds']} s; "
                f"failures: {summary['failures'] or 'none'}"
            )
