"""Every command in the README's shell blocks parses and runs, with a tiny budget.

The `python -m ...` commands of README.md's ```sh blocks are run in README order, in
one temporary directory (so later commands find what earlier ones wrote, as a user's
`runs/` would), each with its own flags plus a tiny-budget override appended (absl:
the last value of a flag wins): a few steps, a small MNIST subset, one bench model.
They run in one subprocess, one after the other, each through its real `__main__`
(`runpy`), the process's flags reset in between, so TensorFlow is imported once.
`make` targets named in the README must exist in the Makefile (they are not run:
`make test` is this suite).
"""
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The tiny budget per module, appended to the README's flags (the first of them names
# the module's options; see each binary's configuration).
VAT = ["--train_limit=320", "--test_limit=64", "--steps=2", "--eval_batch_size=64",
       "--progress=false"]
BUDGET = {
    "train.vat": VAT,
    "train.vat_table": VAT + ["--overhead_steps=1"],
    "train.autoencoder": ["--steps=2", "--train_subset=256", "--test_subset=64",
                          "--progress=false"],
    # 201 steps: the search candidates warm up for 200.
    "train.ae_table": ["--steps=201", "--configs=dense", "--progress=false"],
    "train.dcgan": ["--steps=2", "--train_limit=128", "--val_examples=16",
                    "--eval_samples=0", "--final_eval_samples=0", "--fd_patience=0",
                    "--progress=false"],
    "train.gan_eval": ["--num_samples=32"],
    "train.search": ["--trials=2", "--workers=1"],
    "train.ensemble": [],
    "bench.run": ["--rounds=1", "--steps=1", "--warmup=0", "--kernels=false",
                  "--model_budget_s=5"],
    "bench.epoch_check": ["--steps_per_epoch=2", "--epochs=2", "--bench_steps=1",
                          "--bench_rounds=1"],
}
# Flags whose README value the budget replaces outright (lists that select work).
FIRST_ONLY = {"bench.run": "models", "bench.epoch_check": "models"}
# After `--`, the trial binary's own budget (train.search passes those flags on).
# The README's search samples --warmup_steps up to 60 and holds out --val_size=5000:
# one epoch of the first 13,000 images is 62 steps.
TRIAL_BUDGET = {"train.autoencoder": ["--epochs=1", "--train_subset=13000", "--test_subset=64",
                                      "--progress=false"],
                "train.vat": VAT}


def readme_commands():
    """[(module, args)] of README.md's ```sh blocks, and the make targets named."""
    text = open(os.path.join(ROOT, "README.md")).read()
    commands, targets = [], []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["python", "-m"]:
                commands.append((words[2], words[3:]))
            elif words[:1] == ["make"]:
                targets += words[1:]
    return commands, targets


def with_budget(module, args):
    """`args` with the module's tiny budget: appended, and after `--` for a search."""
    own, rest = (args[:args.index("--")], args[args.index("--"):]) if "--" in args \
        else (args, [])
    if module in FIRST_ONLY:
        name = FIRST_ONLY[module]
        own = [a if not a.startswith(f"--{name}=") else a.split(",")[0] for a in own]
    own = own + BUDGET[module]
    if rest:
        binary = next((a.split("=", 1)[1] for a in own if a.startswith("--binary=")), "")
        rest = rest + TRIAL_BUDGET.get(binary, [])
    return own + rest


RUNNER = textwrap.dedent('''
    import json, runpy, sys
    from absl import flags

    def reset_flags():
        fv = flags.FLAGS
        keep = ("absl", "tensorflow", "keras")
        for name in list(fv):
            module = fv.find_module_defining_flag(name) or ""
            if not module.startswith(keep):
                delattr(fv, name)
        fv.unparse_flags()

    results = []
    for module, args in json.loads(sys.argv[1]):
        reset_flags()
        sys.argv = [module] + args
        print(f"=== python -m {module} {' '.join(args)}", flush=True)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        results.append(code)
    print("RESULTS " + json.dumps(results), flush=True)
''')


def test_readme_make_targets_exist():
    _, targets = readme_commands()
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert targets and {"run", "test"} <= set(targets)
    for t in targets:
        assert re.search(rf"^{re.escape(t)}:", makefile, re.M), t


def test_every_readme_command_runs_with_a_tiny_budget(tmp_path, mnist_dir):
    commands, _ = readme_commands()
    modules = {m for m, _ in commands}
    assert {"train.vat", "train.vat_table", "train.ae_table", "train.dcgan",
            "train.gan_eval", "bench.run"} <= modules, modules
    assert modules <= set(BUDGET), modules - set(BUDGET)
    planned = [(m, with_budget(m, a)) for m, a in commands]
    (tmp_path / "runner.py").write_text(RUNNER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFCORE_DATA_DIR=mnist_dir,
               TFCORE_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), json.dumps(planned)],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    codes = json.loads(lines[-1][len("RESULTS "):])
    failed = [" ".join(["python -m", m] + a) for (m, a), c in zip(planned, codes) if c]
    assert not failed, (failed, proc.stderr[-5000:])
