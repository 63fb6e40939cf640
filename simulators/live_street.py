"""Endless synthetic street audio on stdout, paced in real time: a microphone stand-in.

The compose file's simulated edge agents have no sound card; each pipes this into the
real agent, which reads raw PCM on stdin::

    python -m simulators.live_street --rate 48000 | sonopolis edge - --rate 48000 --format f32le

Background traffic only (``simulators.scene``), no scheduled events: a stand-in gateway
sends level frames and, unless its classifier mistakes the traffic for something, no
security event. Scenes of ``--scene-s`` seconds are generated one after the other and
written one second at a time, each second when it is due, so the agent's clock (samples
counted from its start) stays with the wall clock. Nothing here is real audio.
"""

from __future__ import annotations

import argparse
import sys
import time

from simulators.scene import street_scene


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.live_street", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=int, default=48000, help="sample rate, Hz (give the agent the same --rate)")
    p.add_argument("--background-db", type=float, default=62.0, help="traffic level, Leq (Z) dB SPL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scene-s", type=int, default=60, help="length of each generated scene, s")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this much audio (0: never)")
    p.add_argument("--fast", action="store_true", help="write as fast as the reader takes it (tests)")
    args = p.parse_args(argv)
    if args.rate < 8000 or args.scene_s < 1 or args.seconds < 0:
        p.error("--rate >= 8000, --scene-s >= 1 and --seconds >= 0")

    out = sys.stdout.buffer
    start = time.monotonic()
    written = 0  # seconds
    scene_no = 0
    try:
        while not args.seconds or written < args.seconds:
            audio = street_scene(args.scene_s, args.rate, seed=args.seed * 1_000_003 + scene_no, background_db=args.background_db).audio
            scene_no += 1
            for second in range(args.scene_s):
                if args.seconds and written >= args.seconds:
                    break
                if not args.fast:
                    delay = start + written - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                out.write(audio[second * args.rate : (second + 1) * args.rate].astype("<f4").tobytes())
                out.flush()
                written += 1
    except (BrokenPipeError, KeyboardInterrupt):  # the agent stopped reading: so do we
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
