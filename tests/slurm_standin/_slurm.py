"""A stand-in SLURM for tests: ``sbatch``, ``srun``, ``sacct``, ``scontrol requeue`` and ``scancel``
that run a submitted job array on this machine (no slurmctld). Shared state lives in
``$STANDIN_SLURM_DIR``: ``next_id``, ``state/<job>_<task>`` (PENDING, RUNNING, COMPLETED, FAILED,
CANCELLED) and ``requeue/<job>_<task>`` markers.

sbatch reads the ``#SBATCH`` lines that matter here (``--array=0-N%P``, ``--dependency=afterok:ID``),
prints ``Submitted batch job ID`` and leaves a detached runner that starts the tasks, P at once,
each as ``bash <script>`` with the array variables set; a task whose ``scontrol requeue`` marker
exists when it ends is run again (what SLURM does with a requeued job). srun runs its command
with the task variables and the --output/--error patterns (%A %a %j %t) resolved.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("STANDIN_SLURM_DIR", "/tmp/standin_slurm"))
POLL_S = 0.2


def _state(task: str) -> Path:
    return ROOT / "state" / task


def set_state(task: str, value: str) -> None:
    p = _state(task)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(value)
    os.replace(tmp, p)


def get_state(task: str) -> str:
    try:
        return _state(task).read_text().strip()
    except OSError:
        return ""


def tasks_of(job: str) -> list[str]:
    d = ROOT / "state"
    return sorted((p.name for p in d.glob(f"{job}_*") if not p.name.endswith(".tmp")), key=lambda n: int(n.split("_")[1]))


def sbatch(argv: list[str]) -> int:
    script = Path(argv[-1])
    text = script.read_text()
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)(?:%(\d+))?", text, re.M)
    dep = re.search(r"^#SBATCH --dependency=afterok:(\d+)", text, re.M)
    first, last, par = (int(array[1]), int(array[2]), int(array[3] or 1)) if array else (0, 0, 1)
    ROOT.mkdir(parents=True, exist_ok=True)
    counter = ROOT / "next_id"
    job = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job + 1))
    tasks = [f"{job}_{i}" for i in range(first, last + 1)] if array else [str(job)]
    for t in tasks:
        set_state(t, "PENDING")
    copy = ROOT / f"{job}.sh"
    copy.write_text(text)
    subprocess.Popen([sys.executable, __file__, "_run", str(job), str(copy), str(par), dep[1] if dep else "",
                      "1" if array else "0"], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=open(ROOT / f"{job}.runner.log", "a"), stderr=subprocess.STDOUT)
    print(f"Submitted batch job {job}")
    return 0


def _run(job: str, script: str, par: str, dep: str, is_array: str) -> int:
    if dep:
        while True:
            states = [get_state(t) for t in tasks_of(dep)]
            if states and all(s == "COMPLETED" for s in states):
                break
            if any(s in ("FAILED", "CANCELLED") for s in states):
                for t in tasks_of(job):
                    set_state(t, "CANCELLED")
                return 0
            time.sleep(POLL_S)
    pending = tasks_of(job) if is_array == "1" else [job]
    running: dict[str, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < int(par):
            t = pending.pop(0)
            env = dict(os.environ, SLURM_JOB_ID=t.replace("_", "0"), SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
                       SLURM_JOB_NODELIST="localhost", SLURM_NTASKS="1")
            if is_array == "1":
                env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=t.split("_")[1])
            set_state(t, "RUNNING")
            running[t] = subprocess.Popen(["bash", script], env=env, start_new_session=True)
        time.sleep(POLL_S)
        for t, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[t]
            marker = ROOT / "requeue" / t
            if marker.exists():  # scontrol requeue: run it again
                marker.unlink()
                set_state(t, "PENDING")
                pending.append(t)
            elif get_state(t) != "CANCELLED":
                set_state(t, "COMPLETED" if proc.returncode == 0 else "FAILED")
    return 0


def srun(argv: list[str]) -> int:
    out = err = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("--output", "--error"):
            if argv[i] == "--output":
                out = argv[i + 1]
            else:
                err = argv[i + 1]
            i += 2
        else:
            i += 1
    env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0")
    subst = {"%A": env.get("SLURM_ARRAY_JOB_ID", ""), "%a": env.get("SLURM_ARRAY_TASK_ID", ""),
             "%j": env.get("SLURM_JOB_ID", ""), "%t": "0"}

    def resolve(p):
        for k, v in subst.items():
            p = p.replace(k, v)
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        return open(p, "a")

    stdout = resolve(out) if out else None
    stderr = resolve(err) if err else subprocess.STDOUT
    return subprocess.call(argv[i:], env=env, stdout=stdout, stderr=stderr)


def sacct(argv: list[str]) -> int:
    jobs = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
    print("JobID|State|NodeList")
    for job in jobs:
        for t in ([job] if "_" in job else tasks_of(job)):
            if get_state(t):
                print(f"{t}|{get_state(t)}|localhost")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:1] == ["requeue"]:
        for t in argv[1].split(","):
            (ROOT / "requeue").mkdir(parents=True, exist_ok=True)
            (ROOT / "requeue" / t).write_text("")
        return 0
    return 1


def scancel(argv: list[str]) -> int:
    for t in (a for a in argv if not a.startswith("-")):
        for task in tasks_of(t.split("_")[0]) if "_" not in t else [t]:
            set_state(task, "CANCELLED")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "_run":
        sys.exit(_run(*sys.argv[2:]))
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scontrol": scontrol, "scancel": scancel}[sys.argv[1]](
        sys.argv[2:]))
