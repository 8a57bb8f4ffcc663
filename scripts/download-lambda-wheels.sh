#!/usr/bin/env bash
# Download the provisioner Lambda's wheels (lambda_src/requirements.txt) for both Lambda
# architectures into .tenantkit/wheels/<arch>/, so bundling at synth time needs no network.
# Keep in step with tenant_constructs/bundling.py (LAMBDA_PYTHON_VERSION, wheel_platforms).
set -euo pipefail
python_version=3.14
for arch in arm64:aarch64 x86_64:x86_64; do
  name=${arch%%:*}
  machine=${arch##*:}
  dest=.tenantkit/wheels/$name
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  "${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --implementation cp --python-version "$python_version" \
    --platform "manylinux2014_$machine" --platform "manylinux_2_28_$machine" \
    -r lambda_src/requirements.txt -d "$dest.tmp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
done
echo "Lambda wheels: ok ($(ls .tenantkit/wheels/*/ | grep -c whl) files)"
