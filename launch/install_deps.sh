#!/usr/bin/env bash
# Installs everything Tessera needs to build, test and run its quick start, from Debian's
# packages only. Used by the README, .ci/run and docker/Dockerfile.cpu. Packages already
# installed are skipped; sudo is used when not root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  # LibTorch's CPU kernels call libblas.so.3; without this it is netlib's reference BLAS, an
  # order of magnitude slower (tessera info names the BLAS in use).
  libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  prometheus-cpp-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libstb-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  # tests: h5py reads Tessera's files as a Python user would; a real Prometheus server scrapes
  # the trainer; shellcheck checks the launch scripts.
  python3 python3-h5py python3-numpy python3-yaml prometheus shellcheck
  # tests: the LPIPS and FID Inception networks against PyTorch's (torchvision's Inception v3).
  python3-torch python3-torchvision
  # tests: Fréchet distance against scipy's sqrtm (pytorch-fid's formula), blurred test images.
  python3-scipy
  # tests against a real scheduler and real nodes: a one-host Slurm (launch/slurm/local_cluster.sh;
  # mpi_pmix comes with the basic plugins) and two network namespaces joined by a veth pair.
  slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge iproute2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: not root and no sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
