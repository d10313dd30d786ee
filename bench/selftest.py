#!/usr/bin/env python3
"""Checks of the benchmark driver that need neither torch nor numpy nor timings (ctest: BenchSelfTest).

    python3 bench/selftest.py [PEFTRUN_BINARY]

With the binary, every case's generated peftrun config is also validated by `peftrun check`.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from peftbench import driver, peftrun_side, report  # noqa: E402
from peftbench.base_model import hf_config  # noqa: E402
from peftbench.cases import ADAPTERS, CASES, flops_per_token, with_overrides  # noqa: E402
from peftbench.data import Windows, read_token_file, window_permutation, word_tokens, write_token_file  # noqa: E402

PEFTRUN = None


class DataOrder(unittest.TestCase):
    def test_permutation_matches_peftrun(self):
        # tests/token_data_test.cpp GoldenPermutation pins the same values for the C++ side.
        self.assertEqual(window_permutation(10, 1234, 0), [9, 5, 7, 0, 1, 6, 2, 3, 8, 4])
        for n in (1, 2, 7, 100):
            self.assertEqual(sorted(window_permutation(n, 99, 3)), list(range(n)))

    def test_step_batch_is_peftrun_window_order(self):
        tokens = list(range(50))  # 12 windows of 4 (+1)
        w = Windows(tokens, 4, 1234)
        self.assertEqual(w.num_windows, 12)
        inputs, targets = w.step_batch(1, 3)  # samples 3, 4, 5 of epoch 0
        perm = window_permutation(12, 1234, 0)
        for row, sample in enumerate((3, 4, 5)):
            start = perm[sample] * 4
            self.assertEqual(inputs[row], tokens[start:start + 4])
            self.assertEqual(targets[row], tokens[start + 1:start + 5])
        inputs, _ = w.step_batch(4, 3)  # samples 12..14: the second epoch's own order
        self.assertEqual(inputs[0][0], window_permutation(12, 1234, 1)[0] * 4)

    def test_token_file_round_trip_and_words(self):
        ids = word_tokens("The cat sat.\nThe cat, 12 cats!", 100)
        self.assertEqual(ids[:4], [3, 4, 5, 6])  # The cat sat .
        self.assertEqual(ids[5:7], [3, 4])  # the same words get the same ids
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.tok")
            write_token_file(path, ids, 32000)
            self.assertEqual(read_token_file(path), (32000, ids))
            self.assertEqual(os.path.getsize(path), 32 + 2 * len(ids))


class CaseTable(unittest.TestCase):
    def test_sizes(self):
        self.assertEqual(CASES["1b"].shape.total_params(), 1_100_048_384)  # TinyLlama-1.1B's count
        self.assertTrue(15e6 < CASES["tiny"].shape.total_params() < 25e6)
        self.assertTrue(100e6 < CASES["small"].shape.total_params() < 130e6)
        self.assertEqual([c.device for c in CASES.values()], ["cpu", "cpu", "cuda"])
        for c in CASES.values():
            self.assertEqual(c.adapters, ADAPTERS)
            self.assertEqual(c.threads, 2 if c.device == "cpu" else 0)

    def test_flops_formula(self):
        c = CASES["small"]
        s, spec = c.shape, c.adapter_for_run()
        base = 4 * (12 * (768 * 768 * 2 + 768 * 256 * 2 + 3 * 768 * 2048) + 32000 * 768)
        adapter = 12 * 6 * 16 * (2 * 1536 + 2 * 1024 + 3 * 2816)
        attention = 6 * 256 * 768 * 12
        self.assertEqual(flops_per_token(s, 256, "lora", spec), base + adapter + attention)
        self.assertEqual(flops_per_token(s, 256, "dora", spec), base + adapter + attention)

    def test_overrides(self):
        c = with_overrides(CASES["tiny"], adapters=("dora",), steps=5, warmup=1)
        self.assertEqual((c.adapters, c.steps, c.warmup), (("dora",), 5, 1))
        self.assertEqual(c.optim.warmup_steps, 2)
        self.assertEqual(with_overrides(CASES["tiny"], steps=1, warmup=0).optim.warmup_steps, 1)
        for bad in (dict(adapters=("qlora",)), dict(steps=3, warmup=3), dict(seq_len=4096), dict(batch=0)):
            with self.assertRaises(ValueError, msg=str(bad)):
                with_overrides(CASES["tiny"], **bad)
        self.assertEqual(c.adapter_for_run().tinit, 1)
        self.assertEqual(CASES["small"].adapter_for_run().tinit, 2)
        gc = with_overrides(CASES["small"], gradient_checkpointing=True)
        self.assertEqual((gc.name, gc.gradient_checkpointing), ("small-gc", True))
        self.assertIn("gradient_checkpointing: true", peftrun_side.config_text(gc, "lora", "/b", "/t", "", "/o"))
        self.assertIn("gradient_checkpointing: false",
                      peftrun_side.config_text(CASES["small"], "lora", "/b", "/t", "", "/o"))

    def test_command_line(self):
        args, case = driver.parse_args(["small", "--adapters", "lora,adalora", "--steps", "6", "--repeat", "2"])
        self.assertEqual((case.name, case.adapters, case.steps, args.repeat), ("small", ("lora", "adalora"), 6, 2))
        _, gc = driver.parse_args(["tiny", "--gradient-checkpointing"])
        self.assertEqual((gc.name, gc.gradient_checkpointing), ("tiny-gc", True))
        self.assertEqual(args.systems, {"peftrun", "torch"})
        for bad in (["nosuchcase"], ["tiny", "--adapters", "lorax"], ["tiny", "--systems", "jax"],
                    ["tiny", "--repeat", "0"], []):
            with self.assertRaises(SystemExit, msg=str(bad)):
                with open(os.devnull, "w") as null:
                    stderr, sys.stderr = sys.stderr, null
                    try:
                        driver.parse_args(bad)
                    finally:
                        sys.stderr = stderr


class Report(unittest.TestCase):
    def test_table_and_ratios(self):
        case = with_overrides(CASES["tiny"], adapters=("lora", "dora"), steps=4, warmup=1)
        run = {"status": "ok", "losses": [3.0, 2.0, 1.5, 1.25], "step_times_s": [9.0, 1.0, 1.0, 1.0],
               "maxrss_kib": 2048}
        slow = dict(run, step_times_s=[9.0, 2.0, 2.0, 2.0], maxrss_kib=4096)
        results = {"lora": {"peftrun": report.summarize(case, "lora", [run], None),
                            "torch": report.summarize(case, "lora", [slow], None)},
                   "dora": {"peftrun": report.summarize(case, "dora", [run], None),
                            "torch": report.summarize(case, "dora", [{"status": "skipped: no torch"}], None)}}
        self.assertEqual(results["lora"]["peftrun"]["tokens_per_s"], 1024.0)  # warm-up step excluded
        cmp = report.compare(case, results)
        self.assertEqual(cmp["peftrun_over_torch"]["lora"]["tokens_per_s"], 2.0)
        self.assertEqual(cmp["peftrun_over_torch"]["lora"]["peak_rss_mib"], 0.5)
        self.assertTrue(cmp["loss_agreement"]["lora"]["agree"])
        self.assertNotIn("dora", cmp["loss_agreement"])
        machine = {"date": "2026-12-01T00:00", "gpu": None, "cpu": "X", "cores": 2, "load_average_start": [0, 0, 0],
                   "load_average_end": [0, 0, 0], "peftrun_version": "0", "peftrun_commit": "abc"}
        text = report.table(case, results, cmp, machine, None, {})
        self.assertIn("| DoRA | PyTorch+PEFT | skipped: no torch |", text)
        self.assertIn("| LoRA | **peftrun / PyTorch** | 2.00× | 0.50× | 0.50× | Δ 0.0e+00 ok |", text)
        off = dict(run, losses=[3.0, 2.0, 1.5, 1.5])
        results["lora"]["torch"] = report.summarize(case, "lora", [off], None)
        self.assertFalse(report.compare(case, results)["loss_agreement"]["lora"]["agree"])

    def test_readme_block(self):
        with tempfile.TemporaryDirectory() as d:
            readme = os.path.join(d, "README.md")
            with open(readme, "w") as f:
                f.write("a\n<!-- bench:tiny -->\nold\n<!-- /bench:tiny -->\nb\n")
            self.assertTrue(report.update_readme(readme, "tiny", "NEW\n", os.path.join(d, "results", "r1")))
            with open(readme) as f:
                text = f.read()
            self.assertIn("NEW", text)
            self.assertNotIn("old", text)
            self.assertTrue(text.startswith("a\n") and text.endswith("b\n"))
            self.assertFalse(report.update_readme(readme, "small", "X", d))


class PeftrunConfig(unittest.TestCase):
    def test_config_has_every_setting(self):
        case = CASES["small"]
        text = peftrun_side.config_text(case, "adalora", "/b", "/t.tok", "/init", "/out")
        for needle in ("type: \"adalora\"", "init_r: 16", "target_r: 8", "tinit: 2", "total_step: 12",
                       "seq_len: 256", "micro_batch_size: 4", "threads: 2", "warmup_steps: 2",
                       "weight_decay: 0.01", "init_from: \"/init\"", "device: \"cpu\""):
            self.assertIn(needle, text)
        self.assertNotIn("\n  r: ", text)  # AdaLoRA has no r

    def test_peftrun_accepts_every_generated_config(self):
        if not PEFTRUN or not os.path.exists(PEFTRUN):
            self.skipTest("no peftrun binary given")
        with tempfile.TemporaryDirectory() as d:
            tokens = os.path.join(d, "w.tok")
            write_token_file(tokens, list(range(3, 600)) * 20, 32000)
            for case in list(CASES.values()) + [with_overrides(CASES["tiny"], gradient_checkpointing=True)]:
                base = os.path.join(d, case.name)
                os.makedirs(base)
                with open(os.path.join(base, "config.json"), "w") as f:
                    json.dump(hf_config(case.shape), f)
                for adapter in case.adapters:
                    cfg = os.path.join(d, f"{case.name}-{adapter}.yaml")
                    with open(cfg, "w") as f:
                        f.write(peftrun_side.config_text(case, adapter, base, tokens, "", os.path.join(d, "o")))
                    r = subprocess.run([PEFTRUN, "check", cfg], capture_output=True, text=True)
                    self.assertEqual(r.returncode, 0, f"{case.name} {adapter}: {r.stdout}{r.stderr}")
                    self.assertIn("n_layers: " + str(case.shape.n_layers), r.stdout)

    def test_metrics_reader(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "metrics.jsonl"), "w") as f:
                f.write('{"step": 0, "eval_loss": 5.0}\n{"step": 1, "loss": 4.5, "step_time_s": 0.25}\n')
            r = peftrun_side.read_run(d, "peak device memory: 1536 MiB\n")
            self.assertEqual((r["losses"], r["step_times_s"], r["gpu_peak_bytes"]), ([4.5], [0.25], 1536 * 2**20))
            self.assertNotIn("gpu_peak_bytes", peftrun_side.read_run(d, ""))
            line = "device memory: arenas 3.10 GiB, peak in use 4.50 GiB (cudaMemGetInfo: ...)\n"
            self.assertEqual(peftrun_side.read_run(d, line)["gpu_peak_bytes"], 4.5 * 2**30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        PEFTRUN = sys.argv.pop(1)
    unittest.main(verbosity=1)
