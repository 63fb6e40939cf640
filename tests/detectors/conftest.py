"""Fixtures of the edge-agent tests."""

from __future__ import annotations

import pytest

from detectors import classifier, int8_fidelity


@pytest.fixture
def cpu_off_by_0_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every graph's as-written reference session disagrees by 0.3: a CPU that computes another model.

    A saturating CPU cannot be summoned on every machine, so the reference side of the
    fidelity check is made to disagree instead; the session under test is untouched.
    """

    class Disagreeing:
        def __init__(self, session) -> None:  # noqa: ANN001
            self.session = session

        def get_inputs(self):  # noqa: ANN202
            return self.session.get_inputs()

        def get_outputs(self):  # noqa: ANN202
            return self.session.get_outputs()

        def run(self, names, feed):  # noqa: ANN001, ANN202
            return [self.session.run(names, feed)[0] + 0.3]

    real = classifier.open_session

    def opening(model, *, threads, optimise=True, source=None):  # noqa: ANN001, ANN202
        session = real(model, threads=threads, optimise=optimise, source=source)
        return session if optimise else Disagreeing(session)

    monkeypatch.setattr(classifier, "open_session", opening)
    monkeypatch.setattr(int8_fidelity, "_MEASURED", {})
