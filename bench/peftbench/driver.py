"""bench/bench.py: train one case with peftrun and with PyTorch + PEFT, print one table.

Per case: prepare once (under --work, reused): the random base as an HF checkpoint, the word-level
token file, and per adapter type the initial PEFT adapter (written by PEFT, read by both). Then
for each repeat and adapter the two systems run one after the other as separate processes (the
order alternates between repeats), each with the same threads, and the parent reads each child's
RSS high-water mark from wait4. A side that cannot run (no torch, no CUDA, a peftrun without the
CUDA backend) is reported as skipped with its reason, never with a number.
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from peftbench import machine as machine_info
from peftbench import peftrun_side, report
from peftbench.cases import ADAPTERS, CASES, with_overrides
from peftbench.data import make_word_token_file

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="?", help="case name: " + ", ".join(CASES))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--adapters", type=lambda s: tuple(x for x in s.split(",") if x),
                    help="comma-separated subset of " + ",".join(ADAPTERS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int, help="steps left out of the median step time")
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int, help="CPU threads of each system (CPU cases: 2)")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="both systems recompute each layer in backward (the case is named CASE-gc)")
    ap.add_argument("--fp32", action="store_true",
                    help="GPU cases: both systems compute in fp32, the reference for their bf16 runs "
                         "(the case is named CASE-fp32)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per system and adapter, interleaved")
    ap.add_argument("--systems", default="peftrun,torch", help="which sides to run (peftrun,torch)")
    ap.add_argument("--peftrun", default=os.path.join(REPO, "build", "peftrun"), help="the peftrun binary")
    ap.add_argument("--python", default=sys.executable,
                    help="the Python with torch, transformers, peft and numpy (default: this one)")
    ap.add_argument("--work", default=os.path.join(BENCH_DIR, "work"), help="cache of bases, data, runs")
    ap.add_argument("--results", default=os.path.join(BENCH_DIR, "results"))
    ap.add_argument("--blas-env", choices=("auto", "keep"), default="auto",
                    help="auto: clear OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the runs, so OpenBLAS "
                         "picks the kernels of this CPU; keep: run with them as set (bench/README.md)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each run, wait up to S seconds for the other processes to use "
                         "less than 0.1 core (shared machines)")
    ap.add_argument("--no-save", action="store_true", help="print the table only")
    ap.add_argument("--update-readme", action="store_true",
                    help="put the table into bench/README.md's block for this case")
    ap.add_argument("--time-budget", type=float, default=0, metavar="S",
                    help="stop after S seconds (0: no limit): a run is cut off at the budget's end and no "
                         "new one starts with under 20 s left; the table still comes out, those runs "
                         "marked as cut off (for leases of a GPU machine that are counted in minutes)")
    args = ap.parse_args(argv)
    if args.list:
        return args, None
    if args.case not in CASES:
        ap.error(f"unknown case {args.case!r}; expected one of {', '.join(CASES)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    systems = set(s for s in args.systems.split(",") if s)
    if not systems or systems - {"peftrun", "torch"}:
        ap.error("--systems: expected a comma-separated subset of peftrun,torch")
    args.systems = systems
    try:
        case = with_overrides(CASES[args.case], adapters=args.adapters, steps=args.steps, seq_len=args.seq_len,
                              batch=args.batch, warmup=args.warmup, threads=args.threads,
                              gradient_checkpointing=args.gradient_checkpointing, fp32=args.fp32)
    except ValueError as e:
        ap.error(str(e))
    return args, case


def list_cases():
    for name, c in CASES.items():
        s = c.shape
        print(f"{name:6} {c.device:4} {s.total_params() / 1e6:7.1f}M params  dim {s.dim} x {s.n_layers} layers, "
              f"heads {s.n_heads}/{s.n_kv_heads}, ffn {s.ffn_dim}, vocab {s.vocab_size}; seq {c.seq_len} x batch "
              f"{c.batch}, {c.steps} steps; {c.note}")


# Overrides of OpenBLAS's CPU detection. Some machines set them because old OpenBLAS builds
# misdetect new CPUs; forcing an older kernel set (e.g. Haswell's AVX2 on an AVX-512 CPU) halves
# sgemm. The table names the kernels peftrun actually ran (its log line).
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def thread_env(case, blas_env="auto"):
    env = dict(os.environ)
    if blas_env == "auto":
        for key in BLAS_OVERRIDES:
            env.pop(key, None)
    if case.threads:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(case.threads)
    env["PYTHONPATH"] = BENCH_DIR + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def busy_cpu_seconds():
    """CPU seconds spent busy by the whole machine so far (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(limit_s, threshold=0.1, window_s=2.0):
    """Waits (at most limit_s) until the machine is busy less than `threshold` cores over a
    window while nothing of ours runs; returns the last busy figure seen (None if unknown)."""
    deadline, busy = time.perf_counter() + limit_s, None
    while limit_s > 0:
        b0 = busy_cpu_seconds()
        time.sleep(window_s)
        b1 = busy_cpu_seconds()
        if b0 is None or b1 is None:
            return None
        busy = (b1 - b0) / window_s
        if busy < threshold or time.perf_counter() > deadline:
            break
    return busy


LAST_RUN = {}  # what run_measured saw of the rest of the machine during its last run


def run_measured(cmd, env, log_path, timeout_s=3600):
    """Runs cmd; returns (exit code, RSS high-water KiB, wall seconds). Output goes to log_path.

    Also leaves in LAST_RUN["other_cores"] how many cores other processes kept busy on average
    meanwhile (machine busy time minus the child's own CPU time, per wall second): another build
    on a 2-core machine shows up there, and such a run's timings are suspect."""
    busy0 = busy_cpu_seconds()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    wall = time.perf_counter() - t0
    busy1 = busy_cpu_seconds()
    if busy0 is not None and busy1 is not None and wall > 0:
        own = usage.ru_utime + usage.ru_stime
        LAST_RUN["other_cores"] = max(0.0, (busy1 - busy0 - own) / wall)
    return p.returncode, usage.ru_maxrss, wall


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"


def python_has(python, modules, env):
    code = "import " + ", ".join(modules)
    try:
        r = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


DEADLINE = {"at": None}  # perf_counter() time at which --time-budget runs out (None: no limit)
MIN_RUN_S = 20  # no run starts with less of the budget left


def time_left():
    """Seconds of --time-budget left (an hour when there is no budget)."""
    at = DEADLINE["at"]
    return 3600.0 if at is None else at - time.perf_counter()


def torch_worker(args, env, spec, log_path):
    spec_path = spec["out"] + ".spec.json"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    if time_left() < MIN_RUN_S:
        return {"status": "skipped: time budget spent"}
    code, rss, _ = run_measured([args.python, "-m", "peftbench.torch_worker", spec_path], env, log_path,
                                timeout_s=time_left())
    if code != 0 and time_left() <= 0:
        return {"status": f"cut off at the time budget: {last_line(log_path)}"}
    if code != 0:
        return {"status": f"failed (exit {code}): {last_line(log_path)}"}
    with open(spec["out"]) as f:
        out = json.load(f)
    out["status"], out["maxrss_kib"] = "ok", rss
    out["other_cores"] = LAST_RUN.get("other_cores")
    return out


class Prepared:
    """The inputs both systems share, cached under --work by model shape and seed."""

    def __init__(self, args, case, env, torch_ok):
        s = case.shape
        key = f"{s.dim}x{s.n_layers}-h{s.n_heads}-{s.n_kv_heads}-f{s.ffn_dim}-v{s.vocab_size}-p{s.max_seq_len}"
        self.root = os.path.join(args.work, key + f"-seed{case.seed}")
        self.base = os.path.join(self.root, "base")
        self.tokens = os.path.join(args.work, f"words-v{s.vocab_size}.tok")
        os.makedirs(self.root, exist_ok=True)
        if not os.path.exists(self.tokens):
            n = make_word_token_file(os.path.join(REPO, "data", "tiny", "train.tok"), self.tokens + ".tmp",
                                     s.vocab_size)
            os.replace(self.tokens + ".tmp", self.tokens)
            print(f"wrote {self.tokens} ({n} word tokens)")
        if not os.path.exists(os.path.join(self.base, "config.json")):
            missing = python_has(args.python, ["numpy"], env)
            if missing:
                sys.exit(f"bench: writing the base needs numpy in {args.python} ({missing}); see bench/README.md")
            spec = os.path.join(self.root, "base.spec.json")
            with open(spec, "w") as f:
                json.dump({"folder": self.base, "shape": dataclasses.asdict(s), "seed": case.seed}, f)
            t0 = time.perf_counter()
            code, _, _ = run_measured([args.python, "-m", "peftbench.base_model", spec], env,
                                      os.path.join(self.root, "base.log"))
            if code != 0:
                sys.exit(f"bench: writing the base failed: {last_line(os.path.join(self.root, 'base.log'))}")
            print(f"wrote the random base {self.base} ({s.total_params() / 1e6:.1f}M params, "
                  f"{time.perf_counter() - t0:.0f} s)")
        self.init = {}
        for adapter in case.adapters:
            spec = common_spec(case, adapter, self)
            tag = json.dumps([spec["adapter_spec"], spec["steps"]], sort_keys=True)
            folder = os.path.join(self.root, f"init-{adapter}-{abs(hash_text(tag)):016x}")
            if torch_ok and not os.path.exists(os.path.join(folder, "adapter_model.safetensors")):
                spec.update(mode="init", init_adapter=folder, out=folder + ".json", device="cpu")
                r = torch_worker(args, env, spec, folder + ".log")
                if r["status"] != "ok":
                    sys.exit(f"bench: PEFT could not write the initial {adapter} adapter: {r['status']}")
            self.init[adapter] = folder if os.path.exists(os.path.join(folder, "adapter_model.safetensors")) else ""


def hash_text(text):
    h = 1469598103934665603  # FNV-1a: a stable key (Python's hash() is salted per process)
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) & ((1 << 64) - 1)
    return h


def common_spec(case, adapter, prepared):
    return {"base": prepared.base, "tokens": prepared.tokens, "seq_len": case.seq_len, "batch": case.batch,
            "steps": case.steps, "seed": case.seed, "adapter": adapter,
            "adapter_spec": dataclasses.asdict(case.adapter_for_run()),
            "optim": dataclasses.asdict(case.optim), "device": case.device, "threads": case.threads,
            "gradient_checkpointing": case.gradient_checkpointing, "fp32": case.fp32}


def run_peftrun(args, case, adapter, prepared, run_dir, env):
    if not os.path.exists(args.peftrun):
        return {"status": f"skipped: no peftrun binary at {args.peftrun}"}
    out_dir = os.path.join(run_dir, "peftrun-out")
    shutil.rmtree(out_dir, ignore_errors=True)
    config = os.path.join(run_dir, "peftrun.yaml")
    with open(config, "w") as f:
        f.write(peftrun_side.config_text(case, adapter, prepared.base, prepared.tokens, prepared.init[adapter],
                                         out_dir))
    log_path = os.path.join(run_dir, "peftrun.log")
    if time_left() < MIN_RUN_S:
        return {"status": "skipped: time budget spent"}
    code, rss, _ = run_measured([args.peftrun, config], env, log_path, timeout_s=time_left())
    with open(log_path, errors="replace") as f:
        log = f.read()
    if code != 0 and time_left() <= 0:
        return {"status": f"cut off at the time budget: {last_line(log_path)}"}
    if code != 0:
        reason = last_line(log_path)
        verdict = "skipped" if "not implemented" in reason else f"failed (exit {code})"
        return {"status": f"{verdict}: {reason}"}
    out = peftrun_side.read_run(out_dir, log)
    out["status"], out["maxrss_kib"] = "ok", rss
    out["other_cores"] = LAST_RUN.get("other_cores")
    blas = re.search(r"OpenBLAS [^,(]+\([^)]*\)", log)
    if blas:
        out["blas"] = blas.group(0)
    if not prepared.init[adapter]:
        out["note"] = "peftrun's own adapter init (no PEFT init adapter: torch side unavailable)"
    return out


def run_torch(args, case, adapter, prepared, run_dir, env, torch_missing):
    if torch_missing:
        return {"status": f"skipped: {torch_missing}"}
    spec = common_spec(case, adapter, prepared)
    spec.update(mode="train", init_adapter=prepared.init[adapter], out=os.path.join(run_dir, "torch.json"))
    return torch_worker(args, env, spec, os.path.join(run_dir, "torch.log"))


def measure_peak(args, case, env, torch_missing, work):
    if torch_missing:
        return None
    spec = {"mode": "gemm_peak", "device": case.device, "threads": case.threads,
            "out": os.path.join(work, f"gemm-peak-{case.device}.json")}
    r = torch_worker(args, env, spec, spec["out"] + ".log")
    return r if r["status"] == "ok" else None


def main(argv=None):
    args, case = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        list_cases()
        return 0
    if args.time_budget > 0:
        DEADLINE["at"] = time.perf_counter() + args.time_budget
    env = thread_env(case, args.blas_env)
    info = machine_info.describe(REPO, args.peftrun)
    info["blas_env"] = args.blas_env
    torch_missing = None
    if "torch" not in args.systems:
        torch_missing = "not requested (--systems)"
    else:
        torch_missing = python_has(args.python, ["torch", "transformers", "peft"], env)
        if torch_missing:
            torch_missing = f"no torch/transformers/peft in {args.python} ({torch_missing})"
        elif case.device == "cuda" and python_has(args.python, ["torch; assert torch.cuda.is_available()"], env):
            torch_missing = "torch sees no CUDA device"
    os.makedirs(args.work, exist_ok=True)
    prepared = Prepared(args, case, env, torch_ok=torch_missing is None)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    run_root = os.path.join(args.work, "runs", f"{stamp}-{case.name}")
    peak = measure_peak(args, case, env, torch_missing, args.work)

    raw = {a: {"peftrun": [], "torch": []} for a in case.adapters}
    for rep in range(args.repeat):
        order = ("peftrun", "torch") if rep % 2 == 0 else ("torch", "peftrun")
        for adapter in case.adapters:
            run_dir = os.path.join(run_root, f"{adapter}-{rep}")
            os.makedirs(run_dir, exist_ok=True)
            for system in order:
                if args.wait_quiet > 0:
                    busy = wait_until_quiet(args.wait_quiet)
                    if busy is not None and busy >= 0.1:
                        print(f"  (machine still busy: {busy:.2f} cores after {args.wait_quiet:.0f} s)")
                if system == "peftrun":
                    r = (run_peftrun(args, case, adapter, prepared, run_dir, env) if "peftrun" in args.systems
                         else {"status": "skipped: not requested (--systems)"})
                else:
                    r = run_torch(args, case, adapter, prepared, run_dir, env, torch_missing)
                raw[adapter][system].append(r)
                shown = r["status"]
                if r["status"] == "ok" and (r.get("step_times_s") or [])[case.warmup:]:
                    # The numbers in the log too, in case a later run never lets the table out.
                    step = statistics.median(r["step_times_s"][case.warmup:])
                    shown = (f"ok, median step {step:.4f} s, {case.tokens_per_step / step:.0f} tokens/s, "
                             f"final loss {r['losses'][-1]:.5f}")
                print(f"[{case.name} {adapter} rep {rep}] {system}: {shown}", flush=True)
    info["load_average_end"] = machine_info.load_average()

    results = {a: {s: report.summarize(case, a, runs, peak and peak["peak_flops"]) for s, runs in by.items()}
               for a, by in raw.items()}
    comparison = report.compare(case, results)
    versions = next((r["versions"] for by in raw.values() for r in by["torch"] if r.get("versions")), {})
    table_md = report.table(case, results, comparison, info, peak, versions)
    print()
    print(table_md)
    if args.no_save:
        return 0
    out_dir = os.path.join(args.results, f"{stamp}-{machine_info.short_name(info)}-{case.name}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table_md)
    report.write_json(os.path.join(out_dir, "results.json"), {
        "case": dataclasses.asdict(case), "machine": info, "versions": versions, "gemm_peak": peak,
        "results": results, "comparison": comparison, "flops_formula": "see bench/peftbench/cases.py"})
    plotted = report.plot(os.path.join(out_dir, "loss.png"), case, results)
    print(f"results: {out_dir}" + ("" if plotted else " (no loss.png: matplotlib missing)"))
    if args.update_readme:  # every README with a block for this case: bench/'s, and the top one for some
        for readme in (os.path.join(BENCH_DIR, "README.md"), os.path.join(REPO, "README.md")):
            if report.update_readme(readme, case.name, table_md, out_dir):
                print(f"{os.path.relpath(readme, REPO)} updated")
    return 0
