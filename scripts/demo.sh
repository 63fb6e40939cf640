#!/usr/bin/env bash
# The main job: a simulated neighbourhood of sensors through the real pipeline, end to end.
source "$(dirname "$0")/_env.sh"
exec sonopolis demo "$@"
