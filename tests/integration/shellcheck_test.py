"""Every shell script in the repository passes shellcheck.

    shellcheck_test.py --tessera BIN --mpirun MPIRUN --scratch DIR [--shellcheck PATH]

Scripts are files named *.sh, *.bash or *.sbatch, or any file whose first line is a sh/bash
shebang, outside build directories and .git. Exits 77 (CTest: skipped) without shellcheck.
"""
import os
import shutil
import subprocess
import sys

import harness

SKIP = 77
SKIP_DIRS = {".git", "runs", "data-cache", ".gpu-debs", ".cache", "node_modules", "__pycache__"}
SUFFIXES = (".sh", ".bash", ".sbatch")
# Scripts that must exist: an empty list would pass vacuously.
REQUIRED = ["launch/install_deps.sh", "launch/mpirun.sh", "launch/slurm/run_tessera.sh",
            "launch/slurm/train.sbatch", "launch/slurm/train_multinode.sbatch", ".ci/run"]


def is_shell_script(path, name):
    if name.endswith(SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    interpreter = first[2:].decode(errors="replace").split()
    if not interpreter:
        return False
    program = os.path.basename(interpreter[0])
    if program == "env" and len(interpreter) > 1:
        program = interpreter[1]
    return program in ("sh", "bash", "dash", "ksh")


def scripts(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Build trees (any name) hold generated files and the fakes other tests write.
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("build") and
                             not os.path.exists(os.path.join(dirpath, d, "CMakeCache.txt")))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and is_shell_script(path, name):
                found.append(os.path.relpath(path, root))
    return found


def main():
    def extra(ap):
        ap.add_argument("--shellcheck", default=shutil.which("shellcheck"))

    args = harness.parse_args(extra)
    if not args.shellcheck:
        print("SKIP: shellcheck is not installed (Debian package `shellcheck`)", flush=True)
        sys.exit(SKIP)
    root = harness.source_dir()
    found = scripts(root)
    missing = [r for r in REQUIRED if r not in found]
    harness.check(not missing, f"expected scripts not found: {missing} (found {found})")
    print("checking:\n  " + "\n  ".join(found), flush=True)
    # -x: follow `source`d files. The dialect comes from each file's shebang.
    p = subprocess.run([args.shellcheck, "-x", *found], cwd=root,
                       capture_output=True, text=True, timeout=120)
    harness.check(p.returncode == 0, f"shellcheck found problems:\n{p.stdout}{p.stderr}")
    print(f"PASS: {len(found)} scripts", flush=True)


if __name__ == "__main__":
    main()
