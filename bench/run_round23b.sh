#!/usr/bin/env bash
# Round 23, call 2: the rest of the sm90 kernel's GPU tests on this commit (the other
# block shapes, whose SASS the change left as it was) and the layout tests of round 22's
# review fix, which had not run on a GPU.
source bench/device_setup.sh
timeout "${TEST_S:-400}" python -m pytest -q -rfE -p no:cacheprovider -m cuda -k "not 384" \
  tests/gpu/test_sm90_tile.py tests/gpu/test_eager_fastpath.py tests/runtime/test_layout.py \
  tests/gpu/test_transpose.py > "$OUT/tests_rest.log" 2>&1
tail -8 "$OUT/tests_rest.log"
