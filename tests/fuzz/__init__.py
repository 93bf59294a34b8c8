"""Hypothesis fuzzing of what comes in from outside: files, form posts, Salesforce answers."""

from hypothesis import HealthCheck, Phase, settings


def fuzz(max_examples: int) -> settings:
    """Fixed examples (CI reruns the same ones), no deadline (the emulator is a real server)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        # The explain phase re-runs a failure dozens of times: minutes on the emulator.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )
