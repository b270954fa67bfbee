"""Cooperative cancellation (imaging/cancel.py): a cancelled job stops a real libvips pipeline at its next
block, `check()` stops the render between steps, and nothing changes outside a job."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import pyvips

from tileserver.imaging import cancel
from tileserver.imaging.encode import encode
from tileserver.models import OutputFormat


def slow_image() -> Any:
    """A pipeline that takes many seconds to compute in full (a wide blur of 6000 x 6000 noise, rotated)."""
    noise = pyvips.Image.gaussnoise(6000, 6000, seed=3).gaussblur(12).cast("uchar")
    return noise.bandjoin([noise, noise]).copy(interpretation="srgb").rotate(30)


@pytest.mark.parametrize("fmt", [OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF])
def test_a_cancelled_job_stops_libvips_at_its_next_block(fmt: OutputFormat) -> None:
    job = cancel.Job()
    outcome: dict[str, Any] = {}

    def work() -> None:
        with cancel.running(job):
            img = cancel.watch(slow_image())
            try:
                outcome["body"] = encode(img, fmt, None)
            except pyvips.Error as exc:
                outcome["error"] = str(exc)
            outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.3)
    cancelled = time.monotonic()
    job.cancel()
    thread.join(20)
    assert not thread.is_alive()
    assert "body" not in outcome and "killed" in outcome["error"]
    assert outcome["ended"] - cancelled < 3.0  # stopped within a few blocks, not after the whole image


def test_an_image_watched_after_the_cancel_is_killed_too() -> None:
    job = cancel.Job()
    job.cancel()
    with cancel.running(job), pytest.raises(pyvips.Error, match="killed"):
        cancel.watch(pyvips.Image.black(300, 200)).avg()


def test_check_raises_only_in_a_cancelled_job() -> None:
    cancel.check()  # no job: nothing to stop
    job = cancel.Job()
    with cancel.running(job):
        cancel.check()
        assert cancel.current() is job
        job.cancel()
        with pytest.raises(cancel.Cancelled):
            cancel.check()
    assert cancel.current() is None


def test_outside_a_job_watch_changes_nothing() -> None:
    img = pyvips.Image.black(31, 17)
    assert cancel.watch(img) is img
    with cancel.running(cancel.Job()):
        watched = cancel.watch(img)
        assert watched is not img and (watched.width, watched.height) == (31, 17) and watched.avg() == 0
