#!/usr/bin/env bash
# The real files the suite's real-data tests read, for machines that do not have them (hosted CI
# runners): the TLC green-taxi months and the course's model, into TLC_DATA_DIR (default
# ../shared/data, where tests/synthetic.py looks). Files already there are checked, not fetched.
# Every file is pinned by SHA-256: a file the TLC republished fails here, by name, instead of
# failing a test's row count later. Under STRICT_SKIPS=1 (make test-python) a test that needs a
# missing file fails, so a pipeline without these files cannot pass on skips.
#
#   TLC_DATA_DIR=$PWD/.data bash scripts/fetch-test-data.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TLC_DATA_DIR:-$ROOT/../shared/data}
TLC_URL=${TLC_URL:-https://d37ci6vzurychx.cloudfront.net/trip-data}
# mlops-zoomcamp 04-deployment/web-service/lin_reg.bin: the course's model, served by test_predict.py
COURSE_MODEL_URL=${COURSE_MODEL_URL:-https://raw.githubusercontent.com/DataTalksClub/mlops-zoomcamp/main/04-deployment/web-service/lin_reg.bin}

# name  sha256  (the months the tests name: tests/jobs, tests/registry, tests/model, test_predict.py)
FILES="
green_tripdata_2021-01.parquet b8e2c9496c5eada0f10adbd88f98d91721ec6fe2787a2b355cf0ccfa9678ee7b
green_tripdata_2021-02.parquet fd43c7afa2002716c8afadfd57665ab9c9ad99be419570a9b0a08de15cbeb64e
green_tripdata_2022-01.parquet 6a9efa68165ed2c52ec130cc9d8098b9e8a876f4316c17ddcbc170e46c45ad1d
green_tripdata_2022-02.parquet 4e2fb2eb988955311e2110475eb32308ed2b2a1d601dca73965f3adf731245c4
green_tripdata_2022-03.parquet 3911283dcf1cf9f705871aa7b5fee94ca58404a068289e1f4d4937e05ebb1af5
green_tripdata_2022-07.parquet b027040a9466098ff2b4309fbccf3077421ac30559aa91ea9437168fb0941bd3
green_tripdata_2023-01.parquet 9f0e03dd7f8f94ecc15949cdbfd2a4e1fc9ebb41a11882215158c9fc95012e31
green_tripdata_2023-02.parquet bcc2821d639197cbb09aeb8994121a7004f2a6568a64bf4839015db802f62743
green_tripdata_2023-03.parquet 69ab2c3b515ad1dd686a8ac3375370b8a44b003d95d340655d94828db0681d9d
green_tripdata_2024-03.parquet 43dedd66dd556acfc38da679a174b6adc32e01dd6dccad14bdfdf1521a14abed
zoomcamp_lin_reg.bin b51a38fd7db9b529e6050df04dfceb91c6703502034d02014f9d1996bda1861a
"

mkdir -p "$DIR"
status=0
while read -r name sum; do
  [ -n "$name" ] || continue
  target="$DIR/$name"
  if [ ! -f "$target" ]; then
    case "$name" in
      zoomcamp_lin_reg.bin) url=$COURSE_MODEL_URL ;;
      *) url="$TLC_URL/$name" ;;
    esac
    echo "fetching $name from $url"
    curl -fsSL --retry 3 --retry-delay 5 -o "$target.part" "$url" && mv "$target.part" "$target" \
      || { echo "cannot fetch $name from $url" >&2; rm -f "$target.part"; status=1; continue; }
  fi
  if ! echo "$sum  $target" | sha256sum --check --status; then
    echo "$name in $DIR is not the file the tests were written for (sha256 $(sha256sum "$target" | cut -d' ' -f1), pinned $sum)" >&2
    status=1
  fi
done <<< "$FILES"
[ "$status" -eq 0 ] && echo "test data complete in $DIR"
exit "$status"
