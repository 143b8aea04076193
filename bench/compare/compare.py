#!/usr/bin/env python3
"""filo and PyTorch side by side: the same BERT, shapes and token ids, training steps (forward,
loss, backward, AdamW) and forward passes, measured alternately in one run, in one table.

On a CPU (Debian's python3-torch, /usr/bin/python3) PyTorch runs at its best settings:
OPENBLAS_CORETYPE set to the newest kernel set this CPU runs (OpenBLAS 0.3.21 falls back to old
kernels on CPUs it does not know; see shared/notes/cpu-blas.md), and each split of the cores
between torch's threads and OpenBLAS's is measured; the table compares filo with the best. On a
GPU it runs eager with bf16 autocast (with --bf16) and scaled_dot_product_attention, and
torch.compile of the same model, both with the fused AdamW.

Each measurement is its own process (so OPENBLAS_* apply and peak memory is the process's own):
`filo bench train|infer --json`, or this script with --worker. Rounds go over every contender in
a rotating order; each reports the median step of its run, and the table gives the median over
the rounds. Process start-up, warm-up steps and torch.compile's compilation are not counted.

  CPU: /usr/bin/python3 bench/compare/compare.py --filo BUILD/tools/filo [--config mini]
           [--seq 128] [--batch 16] [--rounds 5] [--json out.json] [--png out.png]
  GPU: python3 bench/compare/compare.py --filo BUILD/tools/filo --device cuda:0 --config base
           --seq 128 --batch 32 --bf16 [--json out.json] [--png out.png]

The PyTorch model is tests/fixtures/bert/make-fixture.py's re-implementation of Hugging Face's
BertForSequenceClassification (transformers itself is not needed), with its attention forward
replaced: without padding it skips the all-zero additive mask (as transformers' SDPA path does),
and on a GPU it calls scaled_dot_product_attention."""
import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PRESETS = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
VOCAB = 30522
# Goals of the benchmark issue: filo's throughput over PyTorch's, and MFU on a GPU.
GOALS_CPU = {"speedup": 1.5}
GOALS_GPU = {"speedup_eager": 1.5, "speedup_compile": 1.15, "mfu": 0.5}


# ---------------------------------------------------------------- the model, shared by both sides

def bert_config(name):
    """filo's preset (filo_bert_config_preset) or a folder's config.json with transformers'
    defaults for missing keys; num_labels as filo reads it (2 when absent)."""
    if name in PRESETS:
        layers, hidden = PRESETS[name]
        return {"vocab_size": VOCAB, "hidden_size": hidden, "num_hidden_layers": layers,
                "num_attention_heads": hidden // 64, "intermediate_size": 4 * hidden, "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
                "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
                "classifier_dropout": None, "num_labels": 2}
    with open(os.path.join(name, "config.json")) as f:
        raw = json.load(f)
    c = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
         "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
         "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
         "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0, "classifier_dropout": None}
    c.update({k: raw[k] for k in c if k in raw})
    c["num_labels"] = len(raw["id2label"]) if "id2label" in raw else raw.get("num_labels", 2)
    if c["hidden_act"] != "gelu":
        raise SystemExit("compare: only hidden_act gelu is mirrored on the PyTorch side, not %r" % c["hidden_act"])
    return c


def forward_flops(c, batch, seq):
    """Matmul FLOPs of one forward, as bench/bert_flops.c counts them."""
    h, ffn, tokens = c["hidden_size"], c["intermediate_size"], batch * seq
    layer = 2 * tokens * h * 3 * h + 4 * batch * seq * seq * h + 2 * tokens * h * h + 4 * tokens * h * ffn
    return c["num_hidden_layers"] * layer + 2 * batch * h * h + 2 * batch * h * c["num_labels"]


def token_ids(torch, batch, seq, vocab):
    """The ids filo's bench uses (bench/model_bench.c token_id): a hash of the flat position."""
    i = torch.arange(batch * seq, dtype=torch.int64)
    return (1 + (i * 2654435761) % 4294967296 % (vocab - 1)).view(batch, seq)


def load_fixture():
    path = os.path.join(ROOT, "tests", "fixtures", "bert", "make-fixture.py")
    spec = importlib.util.spec_from_file_location("bert_fixture", path)
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    return fx


def patch_attention(fx, torch, sdpa):
    """transformers' BertModel builds an additive mask even when nothing is padded; its SDPA path
    drops it (None) so that the fused kernels run. Do the same in both attention forwards."""
    F = torch.nn.functional
    model_forward = fx.BertModel.forward

    def bert_forward(self, input_ids, token_type_ids=None, attention_mask=None):
        if attention_mask is not None:
            return model_forward(self, input_ids, token_type_ids, attention_mask)
        seq = self.encoder(self.embeddings(input_ids, token_type_ids), None)
        return seq, (self.pooler(seq) if self.pooler is not None else None)

    def eager(self, h, mask):
        q, k, v = self.heads(self.query(h)), self.heads(self.key(h)), self.heads(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        if mask is not None:
            scores = scores + mask
        ctx = torch.matmul(self.dropout(F.softmax(scores, dim=-1)), v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], -1)

    def fused(self, h, mask):
        q, k, v = self.heads(self.query(h)), self.heads(self.key(h)), self.heads(self.value(h))
        p = self.dropout.p if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], -1)

    fx.BertModel.forward = bert_forward
    fx.BertSelfAttention.forward = fused if sdpa else eager


def blas_info():
    """The BLAS library torch loaded (from this process's memory map) and, for OpenBLAS, its
    configuration and the kernel set it picked."""
    import ctypes
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in os.path.basename(p) and p.startswith("/"):
                libs.add(os.path.realpath(p))
    for p in sorted(libs):
        try:
            lib = ctypes.CDLL(p)
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return {"library": p, "config": lib.openblas_get_config().decode(),
                    "core": lib.openblas_get_corename().decode(), "threads": lib.openblas_get_num_threads()}
        except (OSError, AttributeError):
            continue
    return {"library": ", ".join(sorted(libs)) or "none found", "config": None, "core": None, "threads": None}


def worker(spec):
    """One PyTorch measurement; prints one JSON object."""
    import torch
    fx = load_fixture()
    cuda = spec["device"].startswith("cuda")
    if spec.get("torch_threads"):
        torch.set_num_threads(spec["torch_threads"])
    patch_attention(fx, torch, sdpa=cuda and hasattr(torch.nn.functional, "scaled_dot_product_attention"))
    c = bert_config(spec["config"])
    dev = torch.device(spec["device"])
    torch.manual_seed(1)
    model = fx.BertForSequenceClassification(fx.Cfg(c, c["num_labels"])).to(dev)
    B, L, train = spec["batch"], spec["seq"], spec["mode"] == "train"
    ids = token_ids(torch, B, L, c["vocab_size"]).to(dev)
    labels = (torch.arange(B) % c["num_labels"]).to(dev)
    run = torch.compile(model) if spec["variant"] == "compile" else model
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=spec["bf16"])
    if train:
        model.train()
        decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
        kw = {"fused": True} if cuda and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames else {}
        opt = torch.optim.AdamW(groups, lr=1e-4, **kw)

        def step():
            with amp:
                _, loss = run(ids, None, None, labels=labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), amp:
                run(ids)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(spec["warmup"]):
        step()
    sync()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    out = {"step_ms_p50": statistics.median(times),
           "step_ms_p90": times[min(len(times) - 1, max(0, math.ceil(0.9 * len(times)) - 1))],
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    if cuda:
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        out["device_name"] = torch.cuda.get_device_name(dev)
    else:
        out["blas"] = blas_info()
    print(json.dumps(out))


# ---------------------------------------------------------------- the driver

def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def openblas_coretype(flags):
    """The newest OpenBLAS 0.3.21 kernel set this CPU can run: Cooperlake needs AVX-512 BF16,
    SkylakeX AVX-512, Haswell AVX2 and FMA."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= flags:
        return "Cooperlake"
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def contenders(a):
    """(key, label, kind, env, spec extras) for every implementation measured, in every precision
    asked for; the key is the chart's short label too."""
    out = []
    for prec in a.precisions:
        for key, label, kind, env, extra in contenders_at(a, prec == "bf16"):
            if len(a.precisions) > 1:
                key, label = "%s %s" % (key, prec), "%s, %s" % (label, prec)
            out.append((key, label, kind, env, dict(extra, bf16=prec == "bf16")))
    return out


def contenders_at(a, bf16):
    out = [("filo", "filo", "filo", {}, {})]
    if a.device == "cpu":
        core = a.coretype or openblas_coretype(cpu_flags())
        cores = os.cpu_count() or 1
        splits = sorted({(1, cores), (cores, 1), (cores, cores)})
        for torch_threads, blas_threads in splits:
            env = {"OPENBLAS_NUM_THREADS": str(blas_threads), "OMP_NUM_THREADS": str(torch_threads)}
            if core:
                env["OPENBLAS_CORETYPE"] = core
            key = "torch T%d B%d" % (torch_threads, blas_threads)
            label = "torch eager, %d torch thread%s + %d BLAS" % (torch_threads, "s" if torch_threads > 1 else "",
                                                                 blas_threads)
            out.append((key, label, "torch", env, {"torch_threads": torch_threads, "variant": "eager"}))
    else:
        amp = "bf16 autocast, " if bf16 else ""
        out.append(("torch eager", "torch eager (%sSDPA, fused AdamW)" % amp, "torch", {}, {"variant": "eager"}))
        out.append(("torch.compile", "torch.compile (%sSDPA, fused AdamW)" % amp, "torch", {},
                    {"variant": "compile"}))
    return out


def run_one(a, mode, kind, env, extra):
    full_env = dict(os.environ)
    full_env.update(env)
    warmup = a.warmup if kind != "torch" or extra.get("variant") != "compile" else max(a.warmup, 5)
    if kind == "filo":
        cmd = [a.filo, "bench", mode, "--config", a.config, "--seq", str(a.seq), "--batch", str(a.batch),
               "--steps", str(a.steps), "--warmup", str(warmup), "--device", a.device, "--json"]
        if extra["bf16"]:
            cmd.append("--bf16")
    else:
        spec = {"mode": mode, "config": a.config, "seq": a.seq, "batch": a.batch, "steps": a.steps,
                "warmup": warmup, "device": a.device}
        spec.update(extra)
        cmd = [a.python, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    p = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd[:3]), p.returncode,
                                                        (p.stderr or p.stdout).strip()[-2000:]))
    return json.loads(lines[-1])


def summarize(runs):
    keys = ["step_ms_p50", "step_ms_p90", "peak_rss_bytes", "peak_allocated_bytes", "peak_reserved_bytes"]
    s = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            s[k] = max(vals) if k.startswith("peak") else statistics.median(vals)
    s["rounds_p50_ms"] = [round(r["step_ms_p50"], 3) for r in runs]
    return s


def mib(x):
    return "%.0f" % (x / 2 ** 20) if x else "-"


def print_table(res, a, flops):
    gpu = a.device != "cpu"
    mem_head = "peak alloc/resv MiB" if gpu else "peak RSS MiB"
    for mode in a.modes:
        rows = res["results"][mode]
        filos = {k: v for k, v in rows.items() if is_filo(k)}
        print("\n%s, %s" % (mode, "forward, loss, backward, AdamW" if mode == "train" else "forward only"))
        ratio_head = "filo x" if len(filos) < 2 else " ".join(k.split(" ", 1)[1] + " x" for k in filos)
        print("%-46s %9s %9s %10s %11s %8s %20s %9s" % ("implementation", "p50 ms", "p90 ms", "samples/s",
                                                    "tokens/s", "TFLOP/s", mem_head, ratio_head))
        for key, r in sorted(rows.items(), key=lambda kv: -kv[1].get("samples_per_s", 0)):
            if "error" in r:
                print("%-46s failed: %s" % (r["label"], r["error"].splitlines()[0][:80]))
                continue
            if gpu:
                mem = "%s / %s" % (mib(r.get("peak_allocated_bytes")), mib(r.get("peak_reserved_bytes")))
            else:
                mem = mib(r.get("peak_rss_bytes"))
            ratio = " ".join("%.2fx" % (f["samples_per_s"] / r["samples_per_s"]) for f in filos.values()
                             if "samples_per_s" in f) or "-"
            print("%-46s %9.2f %9.2f %10.1f %11.0f %8.3f %20s %9s" % (
                r["label"], r["step_ms_p50"], r["step_ms_p90"], r["samples_per_s"], r["tokens_per_s"],
                flops[mode] / (r["step_ms_p50"] * 1e-3) * 1e-12, mem, ratio if not is_filo(key) else ""))


def is_filo(key):
    return key == "filo" or key.startswith("filo ")


def judge(res, a):
    """One line per goal and filo precision: where it stands. On a CPU each filo row is held
    against the best PyTorch row of any precision and thread split."""
    lines = []
    for mode in a.modes:
        rows = {k: v for k, v in res["results"][mode].items() if "samples_per_s" in v}
        filos = {k: v for k, v in rows.items() if is_filo(k)}
        torch_rows = {k: v for k, v in rows.items() if not is_filo(k)}
        if not filos:
            lines.append("%s: filo did not run" % mode)
            continue
        res["ratios"][mode] = {}
        for fkey, filo in filos.items():
            if a.device == "cpu" and torch_rows:
                best_key = max(torch_rows, key=lambda k: torch_rows[k]["samples_per_s"])
                best = torch_rows[best_key]
                sp = filo["samples_per_s"] / best["samples_per_s"]
                mem = (filo.get("peak_rss_bytes", 0) / best["peak_rss_bytes"] if best.get("peak_rss_bytes")
                       else float("nan"))
                lines.append("%s: %s %.2fx the best PyTorch CPU setting (%s), goal %.2fx: %s; peak RSS %.2fx "
                             "PyTorch's (goal below 1): %s" % (
                                 mode, filo["label"], sp, best["label"], GOALS_CPU["speedup"],
                                 "met" if sp >= GOALS_CPU["speedup"] else "NOT met", mem,
                                 "met" if mem < 1 else "NOT met"))
                res["ratios"][mode][fkey] = {"vs": best_key, "speedup": sp, "peak_rss_ratio": mem}
            elif torch_rows:
                res["ratios"][mode][fkey] = {}
                suffix = fkey[len("filo"):]
                for key, goal in (("torch eager", GOALS_GPU["speedup_eager"]),
                                  ("torch.compile", GOALS_GPU["speedup_compile"])):
                    if key + suffix in torch_rows:
                        sp = filo["samples_per_s"] / torch_rows[key + suffix]["samples_per_s"]
                        res["ratios"][mode][fkey][key + suffix] = sp
                        lines.append("%s: %s %.2fx %s, goal %.2fx: %s" % (
                            mode, filo["label"], sp, torch_rows[key + suffix]["label"], goal,
                            "met" if sp >= goal else "NOT met"))
            if a.device != "cpu" and mode == "train" and filo.get("mfu_datasheet") is not None:
                m = filo["mfu_datasheet"]
                lines.append("train: %s MFU %.1f%% of the datasheet peak (%.1f%% of the measured GEMM peak), "
                             "goal 50%%: %s" % (filo["label"], 100 * m, 100 * filo["mfu"],
                                                "met" if m >= GOALS_GPU["mfu"] else "NOT met"))
    return lines


def write_png(res, a, path):
    """Samples/s of every implementation, train and inference side by side, with filo's ratio."""
    modes = a.modes
    keys = []
    for mode in modes:
        for k in res["results"][mode]:
            if k not in keys:
                keys.append(k)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "bars.dat")
        with open(data, "w") as f:
            for k in keys:
                vals = []
                for mode in modes:
                    r = res["results"][mode].get(k, {})
                    vals.append("%.3f" % r["samples_per_s"] if "samples_per_s" in r else "NaN")
                f.write('"%s" %s\n' % (k, " ".join(vals)))
        m = res["machine"]
        ratios = []
        for mode in modes:
            for fkey, r in res["ratios"].get(mode, {}).items():
                if "speedup" in r:
                    ratios.append("%s: %s %.2fx the best PyTorch" % (mode, fkey, r["speedup"]))
                ratios += ["%s: %s %.2fx %s" % (mode, fkey, v, k) for k, v in r.items() if k.startswith("torch")]
        title = "BERT %s, seq %d, batch %d, %s on %s: samples/s (higher is better)\\n%s" % (
            a.config, a.seq, a.batch, "/".join(a.precisions), m["device_name"], "; ".join(ratios))
        if a.device == "cpu":
            title += "\\nT: torch threads, B: OpenBLAS threads"
        script = os.path.join(tmp, "plot.gp")
        with open(script, "w") as f:
            f.write("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n set terminal pngcairo size 1100,600 noenhanced\n"
                    "} else {\n set terminal png size 1100,600 noenhanced\n}\n")
            f.write("set output '%s'\n" % path.replace("'", "''"))
            f.write("set style data histograms\nset style histogram clustered gap 1\n"
                    "set style fill solid 0.8 border -1\nset boxwidth 0.8\nset grid ytics\nset yrange [0:*]\n"
                    "set ylabel 'samples/s'\nset xtics nomirror font ',9'\nset offsets 0, 0, graph 0.08, 0\n")
            f.write('set multiplot layout 1,%d title "%s"\n' % (len(modes), title.replace('"', "'")))
            for i, mode in enumerate(modes):
                f.write("set title '%s'\n" % ("training step" if mode == "train" else "forward pass"))
                f.write("plot '%s' using %d:xtic(1) notitle lc %d, '' using 0:%d:(sprintf('%%.1f', $%d)) "
                        "with labels offset 0,0.8 notitle\n" % (data, i + 2, i + 1, i + 2, i + 2))
            f.write("unset multiplot\n")
        p = subprocess.run(["gnuplot", script], capture_output=True, text=True)
        if p.returncode != 0:
            print("compare: gnuplot failed: %s" % p.stderr.strip(), file=sys.stderr)
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--filo", help="the filo command line binary (BUILD/tools/filo)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    ap.add_argument("--config", default="mini", help="tiny|mini|small|medium|base or a model folder (default mini)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (as --precisions bf16)")
    ap.add_argument("--precisions", help="f32, bf16 or f32,bf16: every contender in each (default f32, or bf16 "
                    "with --bf16)")
    ap.add_argument("--modes", default="train,infer", help="train,infer (default both)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over every contender (default 5)")
    ap.add_argument("--steps", type=int, default=10, help="measured steps per run (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps per run (default 3; torch.compile 5)")
    ap.add_argument("--coretype", help="OPENBLAS_CORETYPE for PyTorch (default: from the CPU's flags)")
    ap.add_argument("--python", default=sys.executable, help="the Python with torch for the workers")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--png", help="write a bar chart (gnuplot) here")
    a = ap.parse_args()
    if a.worker:
        worker(json.loads(a.worker))
        return 0
    if not a.filo or not os.access(a.filo, os.X_OK):
        ap.error("--filo must name the built filo binary (BUILD/tools/filo)")
    a.modes = [m for m in a.modes.split(",") if m]
    a.precisions = [p for p in (a.precisions or ("bf16" if a.bf16 else "f32")).split(",") if p]
    if not a.precisions or any(p not in ("f32", "bf16") for p in a.precisions) or len(set(a.precisions)) < len(
            a.precisions):
        ap.error("--precisions takes f32, bf16 or f32,bf16")
    if not a.modes or any(m not in ("train", "infer") for m in a.modes):
        ap.error("--modes takes train, infer or train,infer")
    if a.rounds < 1 or a.steps < 1 or a.warmup < 1 or a.seq < 1 or a.batch < 1:
        ap.error("--rounds, --steps, --warmup, --seq and --batch must be positive")
    c = bert_config(a.config)
    flops = {"train": 3 * forward_flops(c, a.batch, a.seq), "infer": forward_flops(c, a.batch, a.seq)}
    cs = contenders(a)
    res = {"machine": {"device": a.device, "cpu": cpu_model(), "cores": os.cpu_count(),
                       "kernel": platform.release(), "python": platform.python_version()},
           "settings": {"config": a.config, "seq": a.seq, "batch": a.batch, "precisions": a.precisions, "rounds": a.rounds,
                        "steps": a.steps, "warmup": a.warmup, "model_flops_per_step": flops,
                        "command": " ".join([os.path.basename(sys.executable)] + sys.argv)},
           "results": {m: {} for m in a.modes}, "ratios": {}}
    runs = {m: {k: [] for k, *_ in cs} for m in a.modes}
    failed = {m: {} for m in a.modes}
    first = {}
    print("compare: %d rounds of %s over %s; each run %d warm-up + %d steps" % (
        a.rounds, ", ".join(a.modes), ", ".join(k for k, *_ in cs), a.warmup, a.steps), file=sys.stderr)
    for rnd in range(a.rounds):
        for mode in a.modes:
            order = cs[rnd % len(cs):] + cs[:rnd % len(cs)]
            for key, label, kind, env, extra in order:
                if key in failed[mode]:
                    continue
                t0 = time.time()
                try:
                    r = run_one(a, mode, kind, env, extra)
                except RuntimeError as e:
                    failed[mode][key] = str(e)
                    print("compare: %s %s: %s" % (mode, label, e), file=sys.stderr)
                    continue
                runs[mode][key].append(r)
                first.setdefault(key, r)
                print("compare: round %d %s %-44s p50 %8.2f ms (%.0f s)" % (rnd + 1, mode, label, r["step_ms_p50"],
                                                                          time.time() - t0), file=sys.stderr)
    for mode in a.modes:
        for key, label, kind, env, extra in cs:
            if key in failed[mode]:
                res["results"][mode][key] = {"label": label, "error": failed[mode][key]}
                continue
            s = summarize(runs[mode][key])
            s["label"], s["env"] = label, env
            s["samples_per_s"] = a.batch / (s["step_ms_p50"] * 1e-3)
            s["tokens_per_s"] = a.batch * a.seq / (s["step_ms_p50"] * 1e-3)
            if is_filo(key):
                last = runs[mode][key][-1]
                for k in ("mfu", "mfu_datasheet", "measured_peak_flops_per_s", "datasheet_peak_flops_per_s",
                          "raw_allocs_after_warmup", "filo_version", "device_name"):
                    s[k] = last.get(k)
                s["mfu"] = flops[mode] / (s["step_ms_p50"] * 1e-3) / last["measured_peak_flops_per_s"]
                if last.get("datasheet_peak_flops_per_s"):
                    s["mfu_datasheet"] = flops[mode] / (s["step_ms_p50"] * 1e-3) / last["datasheet_peak_flops_per_s"]
            res["results"][mode][key] = s
    f0 = next((first[k] for k, *_ in cs if is_filo(k) and k in first), {})
    t0 = next((first[k] for k, _, kind, *_ in cs if kind == "torch" and k in first), {})
    res["machine"]["device_name"] = f0.get("device_name") or t0.get("device_name") or cpu_model()
    res["versions"] = {"filo": f0.get("filo_version"), "torch": t0.get("torch_version"),
                       "blas": t0.get("blas"), "python_for_torch": a.python}
    m = res["machine"]
    print("BERT %s (%d layers, hidden %d, %d heads, FFN %d), seq %d, batch %d, %s, on %s (%s, %s cores)" % (
        a.config, c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], a.seq,
        a.batch, " and ".join("bf16 autocast" if p == "bf16" else p for p in a.precisions), a.device,
        m["device_name"], m["cores"]))
    blas = res["versions"]["blas"]
    print("filo %s; PyTorch %s%s; %d rounds alternating, each run %d warm-up + %d steps; medians over rounds" % (
        res["versions"]["filo"], res["versions"]["torch"],
        "; PyTorch's BLAS: %s" % (blas["config"] or blas["library"]) if blas else "", a.rounds, a.warmup, a.steps))
    print_table(res, a, flops)
    print()
    goals = judge(res, a)
    res["goals"] = goals
    for line in goals:
        print(line)
    if blas and not blas.get("config"):
        print("warning: PyTorch is not on OpenBLAS (%s): install libopenblas0-pthread for its best CPU numbers"
              % blas["library"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if a.png and write_png(res, a, a.png):
        print("chart: %s" % a.png)
    return 0 if all("samples_per_s" in r for mode in a.modes for r in res["results"][mode].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
